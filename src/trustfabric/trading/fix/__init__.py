"""FIX 4.4 order entry: simplefix for encoding and parsing, our own session layer.

* :mod:`.codec`   framing and validation of raw bytes (BeginString, BodyLength,
  CheckSum) and the application message builders (8, 9, j).
* :mod:`.store`   sequence-number (and sent-message) stores: in-memory and SQLite.
* :mod:`.session` the acceptor's pure session state machine: bytes in, outgoing
  messages and application events out.
* :mod:`.heartbeat` FIX 4.4 liveness timers (Heartbeat, TestRequest, timeout), both sides.
* :mod:`.client`  a small initiator helper for tests and the demo, with its liveness timers.
* :mod:`.edge`    the edge CA and client registry: onboarding, renewal, revocation.
"""
