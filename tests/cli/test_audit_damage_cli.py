"""``audit collect`` and ``audit verify`` over a damaged spool and a full filesystem: named, typed, non-zero."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from trustfabric.audit import spool as spool_module
from trustfabric.audit.events import Kind
from trustfabric.audit.spool import FRAME_HEADER, Spool, segment_paths
from trustfabric.cli import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    with Spool(tmp_path / "spool" / "pep-risk", "pep-risk") as spool:
        for i in range(500):
            spool.emit(Kind.DECISION, action="submit_order", trace_id=f"o{i}")
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, ["audit", *args], catch_exceptions=False)


def _text(output: str) -> str:
    return " ".join(output.split())  # the console wraps long lines


def _flip_record(path, record: int) -> None:
    data = bytearray(path.read_bytes())
    pos = 0
    for _ in range(record - 1):
        pos += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, pos)[0]
    data[pos + FRAME_HEADER.size + 5] ^= 0x01
    path.write_bytes(bytes(data))


def test_collect_over_a_flipped_byte_ships_the_rest_names_the_record_and_verify_is_not_intact(home):
    assert invoke("collect").exit_code == 0 and invoke("verify").exit_code == 0
    with Spool(home / "spool" / "pep-risk", "pep-risk") as spool:  # 500 more, into the same active segment
        for _ in range(500):
            spool.emit(Kind.DECISION)
    _flip_record(segment_paths(home / "spool" / "pep-risk")[-1], 700)
    collected = invoke("collect")
    assert collected.exit_code == 3
    assert "collected 500 new records" in collected.stdout  # 499 intact + the alert in the lost one's place
    said = _text(collected.stderr)
    assert said.startswith("audit.spool.corrupt:")
    assert "segment 00000001.seg record 700" in said and "after seq 699 and before seq 701" in said
    verified = invoke("verify")
    assert verified.exit_code == 4 and "intact" not in verified.stdout
    assert _text(verified.stderr).startswith("audit.spool.corrupt:") and "record 700" in _text(verified.stderr)
    again = invoke("collect")  # nothing new, the damage already recorded
    assert again.exit_code == 0 and "collected 0 new records" in again.stdout


def test_collect_on_a_full_filesystem_is_one_typed_line_and_loses_nothing(home, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    real = spool_module.write_ack
    with monkeypatch.context() as patch:  # the ack write of this run fails as on a full filesystem
        patch.setattr("trustfabric.audit.collector.write_ack", lambda d, a: real(d, a, write=full))
        refused = invoke("collect")
    assert refused.exit_code == 2
    assert refused.stderr.strip().startswith("audit.spool.ack_unwritable:")
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert invoke("collect").exit_code == 0  # shipped again and stored once
    verified = invoke("verify")
    assert verified.exit_code == 0 and "intact: 500 records" in verified.stdout
