"""``python -m trustfabric.trading.services <name> --mode zero-trust|perimeter``: run one floor service.

The launcher writes one JSON line on the process's stdin (ports, seed, the
control plane's addresses and bundle, and - zero-trust - a one-time join token
and a signed posture report); the process prints ``READY <port>`` once serving,
or ``REFUSED <reason>`` when the control plane refused it, and exits 3.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from trustfabric.trading.services import SERVICES, factory_for
from trustfabric.trading.services.base import MODES, read_boot, serve_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustfabric.trading.services")
    parser.add_argument("name", choices=sorted(SERVICES) + ["demo-attacker"])
    parser.add_argument("--mode", choices=MODES, default="zero-trust")
    parser.add_argument("--as-identity", default="", help="claim this service's identity (tests: impostors)")
    args = parser.parse_args(argv)
    boot = read_boot()
    if args.name == "demo-attacker":
        from trustfabric.trading.services.demo_attacker import run_attacker

        return asyncio.run(run_attacker(boot))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    identity = args.as_identity or args.name
    return asyncio.run(serve_service(identity, args.mode, boot, factory_for(args.name)))


if __name__ == "__main__":
    sys.exit(main())
