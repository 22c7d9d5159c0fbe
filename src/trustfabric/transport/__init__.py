"""Transport: mTLS channels between services (asyncio on uvloop) with msgspec frames.

The TLS peer certificate is the caller's identity: its single SPIFFE URI SAN,
verified against the bundle of the server's own trust domain only.
"""
