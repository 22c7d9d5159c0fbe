"""Enforcement: the policy enforcement point (PEP) next to every service.

Rigorous checks when a session opens or renews (certificate, bound token, decision
table); on the hot path only a lookup of a pre-computed decision and cheap
obligation checks. Fails closed.
"""
