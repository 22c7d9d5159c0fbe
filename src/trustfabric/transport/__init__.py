"""Transport: mTLS channels between services (asyncio on uvloop) with msgspec frames.

The TLS peer certificate is the caller's identity: its single SPIFFE URI SAN,
verified against the bundle of the server's own trust domain only.

* :mod:`~trustfabric.transport.tls` - SSL contexts (TLS 1.3, client cert required),
  :class:`PeerIdentity`, :func:`peer_identity`, reloadable :class:`TLSConfig`.
* :mod:`~trustfabric.transport.frames` - length-prefixed MessagePack frames, codec, streaming decoder.
* :mod:`~trustfabric.transport.connection` - :class:`FrameServer`, :func:`connect`, :class:`FrameConnection`.
* :mod:`~trustfabric.transport.client` - :class:`Requester`, :class:`RotatingClient`, :func:`measure_rtt`.
* :mod:`~trustfabric.transport.memory` - the in-memory transport for tests.
* :mod:`~trustfabric.transport.endpoint` - :class:`FrameEndpoint`, the delivery and batching both connections
  share, and :func:`answer_unhandled`.
* :mod:`~trustfabric.transport.errors` - the exception tree and reason codes.
"""
