"""Identity: PKI and ID management (NIST 800-207).

One CA per trust domain (prod, test, dev), short-lived X.509 workload certificates
carrying a SPIFFE ID and issued only after attestation, human users with argon2id
passwords and TOTP MFA, and signed, short-lived, certificate-bound access tokens.
"""
