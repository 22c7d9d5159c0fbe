"""Nesting bounds for every decoder: refuse a value nested too deep BEFORE a recursive decoder sees it.

msgspec, ``json`` and the libraries above them decode arrays and objects recursively; a body
nested a thousand levels deep makes them raise ``RecursionError`` (or worse, deeper than the C
stack) from wherever the decode was called. Every decoder of outside bytes in the fabric
therefore asks these first. Both checks are iterative and linear in the input, and both start
with a one-pass C screen: a value cannot nest deeper than the number of container openers it
holds, so ordinary inputs never reach the walk.

:data:`MAX_NESTING` is far above the deepest schema the fabric has (under 10 levels).
"""

from __future__ import annotations

import itertools
import re

MAX_NESTING = 64

# 1 for a byte that may open a MessagePack container (fixmap, fixarray, array16/32, map16/32), else 0.
CONTAINER_FLAGS = bytes(1 if (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF) else 0 for b in range(256))
# Bytes that follow a MessagePack type byte before the next value: (fixed size, length-field size).
_SKIP: dict[int, tuple[int, int]] = {
    0xC0: (0, 0), 0xC2: (0, 0), 0xC3: (0, 0),
    0xC4: (0, 1), 0xC5: (0, 2), 0xC6: (0, 4),  # bin 8/16/32
    0xC7: (1, 1), 0xC8: (1, 2), 0xC9: (1, 4),  # ext 8/16/32 (type byte + data)
    0xCA: (4, 0), 0xCB: (8, 0),
    0xCC: (1, 0), 0xCD: (2, 0), 0xCE: (4, 0), 0xCF: (8, 0),
    0xD0: (1, 0), 0xD1: (2, 0), 0xD2: (4, 0), 0xD3: (8, 0),
    0xD4: (2, 0), 0xD5: (3, 0), 0xD6: (5, 0), 0xD7: (9, 0), 0xD8: (17, 0),  # fixext
    0xD9: (0, 1), 0xDA: (0, 2), 0xDB: (0, 4),  # str 8/16/32
}
_CONTAINER_LEN = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # (length bytes, items per entry)


def msgpack_nesting_exceeds(body, limit: int = MAX_NESTING) -> bool:
    """Whether a MessagePack value nests arrays/maps more than ``limit`` deep.

    Iterative (a stack of item counts, never recursion), and linear in the body: every step
    consumes at least one byte. A body that is malformed or truncated before the bound is
    reached is not judged here (``False``): the decoder refuses it as malformed.
    """
    data = bytes(body)
    if len(data) <= limit or data.translate(CONTAINER_FLAGS).count(1) <= limit:
        return False  # too few container headers to nest that deep
    end = len(data)
    pos = 0
    pending = [1]  # values still to read at each open level; [0] is the top level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        if pos >= end:
            return False
        pending[-1] -= 1
        op = data[pos]
        pos += 1
        if op <= 0x7F or op >= 0xE0:
            continue
        if op <= 0x9F:  # fixmap / fixarray
            items = (op & 0x0F) * 2 if op <= 0x8F else op & 0x0F
        elif op <= 0xBF:  # fixstr
            pos += op & 0x1F
            continue
        elif op in _CONTAINER_LEN:
            size, per = _CONTAINER_LEN[op]
            if pos + size > end:
                return False
            items = int.from_bytes(data[pos:pos + size], "big") * per
            pos += size
        else:
            skip = _SKIP.get(op)
            if skip is None:  # 0xc1: never used
                return False
            fixed, size = skip
            if size:
                if pos + size > end:
                    return False
                fixed += int.from_bytes(data[pos:pos + size], "big")
                pos += size
            pos += fixed
            continue
        if items:
            if len(pending) > limit:
                return True
            pending.append(items)
    return False


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _opener in b"[{":
    _STEP[_opener] = 1
for _closer in b"]}":
    _STEP[_closer] = -1


def json_nesting_exceeds(data: bytes | str, limit: int = MAX_NESTING) -> bool:
    """Whether a JSON text nests arrays/objects more than ``limit`` deep (brackets in strings do not count).

    Strings are blanked and the brackets left are summed in C. A closer without its opener makes
    the depth run low afterwards, but a decoder refuses the text at that closer, before anything
    after it could nest.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKET)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit
