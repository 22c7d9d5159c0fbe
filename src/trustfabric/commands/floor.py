"""``trustfabric floor halt|reduce|resume SCOPE TARGET --user NAME --totp CODE``: the kill switch.

Against a running ``trustfabric up`` (its ``$TRUSTFABRIC_HOME/floor/runtime.json``
names the control plane's operator endpoint and its certificate): the person logs
in with password + TOTP, the control plane checks a fresh step-up and the role
(risk or security officer), and pre-trade-risk applies the command. ``resume`` is
four-eyes: the first person's resume is a request, a *second* person's resume
approves it. The password comes from ``--password``, ``$TRUSTFABRIC_PASSWORD`` or a
prompt. Exit 0 when applied, 1 with the reason code when refused.
"""

from __future__ import annotations

import asyncio
import json

import typer

from trustfabric.commands.common import console, fail

app = typer.Typer(help="The running floor: kill switch (halt, reduce, resume).", no_args_is_help=True)

SCOPE_HELP = "firm, account or agent."
TARGET_HELP = "The account, or the agent (a service name such as algo-momentum, or a FIX client such as client-a)."


def _send(action: str, scope: str, target: str, user: str, totp: str, password: str, as_json: bool) -> None:
    from trustfabric.control.client import kill_switch
    from trustfabric.control.protocol import KillSwitchRequest
    from trustfabric.errors import TrustFabricError
    from trustfabric.home import home_dir

    manifest_path = home_dir() / "floor" / "runtime.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise fail("floor.not_running", f"no {manifest_path}; start `trustfabric up` first") from None
    control = manifest.get("control", {})
    if manifest.get("mode") != "zero-trust" or not control.get("bundle_pem"):
        raise fail("control.perimeter_mode", "the kill switch needs the zero-trust floor's control plane")
    request = KillSwitchRequest(user=user, password=password, totp=totp, action=action, scope=scope,
                                target=target if scope != "firm" else "")
    try:
        reply = asyncio.run(kill_switch("127.0.0.1", int(control["bootstrap_port"]),
                                        bundle_pem=control["bundle_pem"].encode(), control_id=control["spiffe_id"],
                                        request=request))
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail) from None
    out = {"ok": reply.ok, "reason": reply.reason, "state": reply.state, "pending": reply.pending,
           "cancels": reply.cancels, "operator": reply.operator}
    if as_json:
        console.print_json(json.dumps(out))
    elif reply.ok:
        what = "resume requested: a second person must resume too" if reply.pending else f"state {reply.state}"
        console.print(f"{action} {scope} {target}: {what} (cancels sent: {reply.cancels})")
    if not reply.ok:
        raise fail(reply.reason, f"{action} {scope} {target} refused")


def _register(action: str, doc: str) -> None:
    """Add the ``action`` command (halt, reduce, resume): the same arguments, one kill-switch request."""

    def command(scope: str = typer.Argument(..., help=SCOPE_HELP), target: str = typer.Argument("", help=TARGET_HELP),
                user: str = typer.Option(..., "--user", help="Your user name (risk or security officer)."),
                totp: str = typer.Option(..., "--totp", help="Your current TOTP code."),
                password: str = typer.Option("", "--password", envvar="TRUSTFABRIC_PASSWORD",
                                             help="Password (else a prompt)."),
                as_json: bool = typer.Option(False, "--json", help="Print the reply as JSON.")) -> None:
        _send(action, scope, target, user, totp, password or typer.prompt("password", hide_input=True), as_json)

    command.__doc__ = doc
    app.command(name=action)(command)


_register("halt", "HALTED: refuse every order in the scope and cancel its working orders.")
_register("reduce", "REDUCING: only risk-reducing orders pass in the scope.")
_register("resume", "Back to ACTIVE, four-eyes: a first person requests, a different second person approves.")
