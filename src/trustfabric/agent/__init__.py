"""The per-host agent: the SPIFFE Workload API for local workloads (see workload_api.py)."""
