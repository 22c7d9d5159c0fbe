"""The data vault's refusals, each with a dotted reason code (``data.*``)::

    TrustFabricError
    └── DataError                    data.refused
        ├── LabelError               data.bad_label, data.bad_object_id, data.bad_purpose
        ├── SealedFormatError        data.malformed
        ├── OpenRefused              data.binding_mismatch (moved or relabelled), data.unwrap_failed,
        │                            data.not_found, data.kek_shredded, data.kek_missing
        ├── KeyStoreError            data.keystore_exposed, data.keystore_io
        ├── UnwrapRefused            data.cross_environment, data.no_session, and every reason of the
        │                            enforcement point's check (policy.no_permit, policy.forbid, ...)
        └── FourEyesRefused          data.four_eyes_same_person, data.four_eyes_incomplete

Foreign exceptions of ``cryptography`` (``InvalidTag``, ``InvalidUnwrap``) and of
``msgspec`` are translated here, at the envelope's boundary.
"""

from __future__ import annotations

from trustfabric.errors import TrustFabricError


class DataError(TrustFabricError):
    reason = "data.refused"


class LabelError(DataError):
    reason = "data.bad_label"


class SealedFormatError(DataError):
    reason = "data.malformed"


class OpenRefused(DataError):
    reason = "data.binding_mismatch"


class KeyStoreError(DataError):
    reason = "data.keystore_io"


class UnwrapRefused(DataError):
    reason = "data.unwrap_denied"


class FourEyesRefused(DataError):
    reason = "data.four_eyes_incomplete"
