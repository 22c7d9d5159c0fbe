"""Response: detection of lateral movement and anomalies, alerts, automated containment.

Time to detect and time to contain are measured for every incident.
"""
