"""Signals: the live context of policy decisions (NIST 800-207 CDM, threat intelligence, activity).

Host posture (signed reports with a freshness bound), threat-intelligence
indicators (STIX 2.1), behavioural risk scores, and market context (session,
kill switch). Every change of a signal is an audit event with its source.
"""
