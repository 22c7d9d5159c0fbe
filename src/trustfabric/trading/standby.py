"""A standby control plane: waits for the floor's lease and takes the floor over when its holder dies.

``python -m trustfabric.trading.standby`` reads one JSON line on stdin (what the launcher's
:meth:`~trustfabric.trading.launcher.Floor._start_standbys` writes: the home, the mode, the
services, the policies, the bus, lifetimes and the two ports it is to listen on), prints
``STANDBY`` and waits for the lease (:mod:`trustfabric.control.lease`). The active control
plane holds it for as long as its process lives; when that process dies (``kill -9``
included) the lease is free, this process takes it and becomes the floor's control plane
(:meth:`~trustfabric.trading.launcher.Floor.take_over`): it serves the running services on its
own control port, which each of them has in its boot line as its next control endpoint, runs
the posture agents, collects the spools and writes the runtime manifest. It records, in the
manifest's ``takeover``, when it took the lease, when it was serving, and when every service
had moved to it. SIGTERM before the takeover ends it quietly; after it, it stops the floor and
adds the floor's summary (``fail_open`` included) to the manifest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from trustfabric.policy.topology import Topology
from trustfabric.trading.deployment import load
from trustfabric.trading.launcher import Floor, floor_summary

ALL_MOVED_WAIT_S = 30.0


async def _run(spec: dict) -> int:
    home = Path(spec["home"])
    manifest = home / "floor" / "runtime.json"
    bootstrap, control = (int(p) for p in spec["control_ports"])
    placement = None
    if spec.get("deployment"):
        topology = Topology.for_policies(spec["policies"])
        placement = load(spec["deployment"], topology)
    floor = Floor(home, spec.get("mode", "zero-trust"), services=tuple(spec["services"]),
                  policies=Path(spec["policies"]), bus_url=spec.get("bus_url", ""),
                  cert_ttl_s=int(spec.get("cert_ttl_s", 3600)), posture_max_age_s=spec.get("posture_max_age_s"),
                  collect_interval_s=float(spec.get("collect_interval_s", 1.0)), control_ports=(bootstrap, control),
                  instance=f"{'replica' if spec.get('replica') else 'standby'}-{control}", deployment=placement,
                  table_ttl_s=spec.get("table_ttl_s"))
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        stop.set()
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if spec.get("replica"):  # a follower replica: serving now, with the state of record caught up before answers
        await floor._start_control_plane(writer=False)
        print("REPLICA", flush=True)
    else:
        print("STANDBY", flush=True)
    os.dup2(2, 1)  # from here stdout goes to the log: the pipe to the launcher dies with it
    if not await asyncio.to_thread(floor.lease.acquire, stop):
        return 0  # stopped while standing by: nothing was taken over
    running = json.loads(manifest.read_text()).get("services", {})
    await floor.take_over(running)
    print(f"ACTIVE {control}", flush=True)
    moved = await floor.wait_for(lambda: set(running) <= _subscribed(floor), ALL_MOVED_WAIT_S, 0.01)
    if moved:
        floor.takeover["all_moved_at"] = time.time()
        floor.write_manifest()
    await stopping.wait()
    summary = floor_summary(floor)  # the services' counters since they started (they report them here now)
    await floor.stop()
    data = json.loads(manifest.read_text())
    data["summary"] = summary
    manifest.write_text(json.dumps(data, indent=2))
    return 0


def _subscribed(floor: Floor) -> set[str]:
    server = floor.server
    return {name for name, conns in (server.subscribers if server is not None else {}).items() if conns}


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    sys.exit(asyncio.run(_run(spec)))


if __name__ == "__main__":
    main()
