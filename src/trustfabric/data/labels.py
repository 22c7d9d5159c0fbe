"""Dataset labels: classification, environment and owner segment, and what they bind.

A :class:`Labels` value names the dataset an object belongs to. Three things hang on it:

* the Cedar resource the key service decides on: ``data/<segment>/<classification>``
  (declared in ``policies/floor.toml``; the resource's ``kind`` is the classification);
* the key-encryption key that wraps the object's data key: one per (segment, environment);
* the associated data of the object's AES-GCM encryption (:func:`associated_data`): the
  object id and all three labels, so a ciphertext moved to another id or relabelled fails
  to open.

Purposes map to Cedar actions (:data:`PURPOSES`): ``write`` seals, ``read`` opens the
plaintext, ``analyse`` opens with client fields tokenized.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from trustfabric.data.errors import LabelError

CLASSIFICATIONS = ("client-confidential", "proprietary-algo", "trade-history", "market-data", "public")
ENVIRONMENTS = ("prod", "test", "dev")
PURPOSES: dict[str, str] = {"write": "data_write", "read": "data_read", "analyse": "data_analyse"}
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
AAD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Labels:
    classification: str
    environment: str
    segment: str

    def __post_init__(self) -> None:
        if self.classification not in CLASSIFICATIONS:
            raise LabelError(f"classification {self.classification!r} not one of {', '.join(CLASSIFICATIONS)}")
        if self.environment not in ENVIRONMENTS:
            raise LabelError(f"environment {self.environment!r} not one of {', '.join(ENVIRONMENTS)}")
        if not isinstance(self.segment, str) or not _NAME.fullmatch(self.segment):
            raise LabelError(f"segment {self.segment!r} is not a segment name")

    @property
    def dataset(self) -> str:
        """The Cedar resource of the dataset (the environment is the topology's own)."""
        return f"data/{self.segment}/{self.classification}"

    @property
    def kek_scope(self) -> tuple[str, str]:
        return self.segment, self.environment

    def to_dict(self) -> dict[str, str]:
        return {"classification": self.classification, "environment": self.environment, "segment": self.segment}


def check_object_id(object_id: object) -> str:
    if not isinstance(object_id, str) or not _OBJECT_ID.fullmatch(object_id) or ".." in object_id:
        raise LabelError(f"object id {str(object_id)[:80]!r}: 1-128 of letters, digits, '.', '_', '-'",
                         reason="data.bad_object_id")
    return object_id


def action_for(purpose: object) -> str:
    action = PURPOSES.get(purpose) if isinstance(purpose, str) else None
    if action is None:
        raise LabelError(f"purpose {str(purpose)[:40]!r} not one of {', '.join(PURPOSES)}", reason="data.bad_purpose")
    return action


def associated_data(object_id: str, labels: Labels) -> bytes:
    """The AEAD associated data: the object id and its labels, canonical JSON."""
    return json.dumps({"v": AAD_VERSION, "id": object_id, **labels.to_dict()}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")
