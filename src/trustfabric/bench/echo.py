"""A plain TCP echo service for benchmarks, in its own process: ``python -m trustfabric.bench.echo``.

It prints ``port <n>`` once listening on 127.0.0.1 (an ephemeral port) and echoes every
connection's bytes until its stdin closes. On uvloop, with one protocol per connection:
what the benchmark's upstream costs is the same for every target measured in front of it.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
    server.close()


def main() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve())


if __name__ == "__main__":
    main()
