"""Serving the console: uvicorn in the caller's event loop, HTTPS with a certificate of the fabric's CA.

:func:`start_console` issues the console a TLS server certificate from the floor's trust
domain CA (its SPIFFE ID ``spiffe://<domain>/console/console`` and the names
``localhost`` / ``127.0.0.1``), writes it with its key under ``$TRUSTFABRIC_HOME/console/``
(the key 0600), and starts uvicorn on loopback. The browser trusts the CA bundle the
command prints (``console/ca-bundle.pem``). Plain HTTP only when asked for, and only on
loopback (the session cookie then loses its ``Secure`` flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustfabric.console.app import ConsoleConfig, create_app
from trustfabric.errors import ConfigError
from trustfabric.identity.plane import IdentityPlane
from trustfabric.keyfiles import key_to_pem, write_private_file
from trustfabric.policy.paths import FLOOR_MANIFEST
from trustfabric.policy.topology import Topology

LOOPBACK = ("127.0.0.1", "::1", "localhost")
CERT_TTL_S = 7 * 86400


@dataclass
class RunningConsole:
    url: str
    bundle: Path | None
    server: uvicorn.Server
    task: asyncio.Task

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


def issue_certificate(home: Path) -> tuple[Path, Path, Path]:
    """(certificate chain, key, CA bundle) of the console, issued now by the floor's trust domain CA."""
    domain = Topology.load(FLOOR_MANIFEST).trust_domain
    out = home / "console"
    with IdentityPlane(home) as plane:
        ca = plane.ca(domain)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ca.issue_web_server(key.public_key(), f"spiffe://{domain}/console/console",
                                   ["localhost", "127.0.0.1"], time.time(), ttl_s=min(CERT_TTL_S, ca.max_leaf_ttl_s))
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca.current.issuing_cert.public_bytes(
            serialization.Encoding.PEM)
        bundle = ca.bundle_pem()
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / "cert.pem").write_bytes(chain)
    write_private_file(out / "key.pem", key_to_pem(key))
    (out / "ca-bundle.pem").write_bytes(bundle)
    return out / "cert.pem", out / "key.pem", out / "ca-bundle.pem"


async def start_console(home: Path, host: str = "127.0.0.1", port: int = 0, *, https: bool = True,
                        idle_s: float = 900.0) -> RunningConsole:
    if host not in LOOPBACK:
        raise ConfigError(f"the console listens on loopback only, not {host}", reason="console.not_loopback")
    cert = key = bundle = None
    if https:
        cert, key, bundle = issue_certificate(Path(home))
    app = create_app(ConsoleConfig(home=Path(home), secure=https, idle_s=idle_s))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # the caller's loop owns the signals
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):  # bounded: started, or failed
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        if task.done() and task.exception() is not None:
            raise ConfigError(f"the console did not start: {task.exception()}", reason="console.start_failed")
        raise ConfigError("the console did not start in 10 s", reason="console.start_failed")
    bound = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if https else "http"
    return RunningConsole(f"{scheme}://{'127.0.0.1' if host == 'localhost' else host}:{bound}/", bundle, server, task)
