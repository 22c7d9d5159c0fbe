"""Fixtures: the reference floor's topology, a live signal hub with healthy hosts (desk-1 too), a policy engine."""

from tests.floor_fixtures import POLICY_DIR, bus, clock, engine, hub, sink, spiffe, topology  # noqa: F401
