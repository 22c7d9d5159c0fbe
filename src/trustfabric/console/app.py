"""The operators' web console: Starlette, pages rendered on the server, live parts over Server-Sent Events.

Who may do what
---------------
* **Login** is the identity plane's: password and TOTP (lockout and TOTP replay are the
  plane's), turned into an *operator session* bound to the console's machine key (an
  Ed25519 key that lives in this process only), exactly as ``trustfabric login`` binds
  one to the CLI's machine. Logins are also rate-limited per source address.
* The browser holds only a random session id: cookie ``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` over HTTPS; the session ends after ``idle_s`` without a request. Every
  state-changing request carries the session's CSRF token (a form field compared in
  constant time); a POST without it is refused (403) before anything else.
* **Every page** is a Cedar decision (``operator.console.<page>`` on ``Control::"console"``)
  made by the operator authority over the person's session and a proof by the console's
  machine key, and audited under ``user:<name>``; a refused page is a 403 naming the reason.
* **Every action** (quarantine, release, kill switch) is an operator request to the running
  floor's control plane (:func:`trustfabric.commands.operate.apply`), which authorizes the
  person by Cedar on their role, applies it and confirms it at every enforcement point;
  a button the person's role may not use is not shown, and a hand-made POST is refused by
  the control plane all the same. Release and kill-switch resume need a TOTP code in the
  form (a fresh step-up); a resume by one person is a request that a *second*, different
  person's resume approves (the kill switch's four eyes).

Live decisions stream from the central audit log (polled every 0.25 s; the floor's collector
ships spools every second) and are sampled above ``stream_max_per_s``, which the page says.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from trustfabric.audit.log import open_log
from trustfabric.audit.treehead import load_public_key
from trustfabric.audit.verify import verify_log
from trustfabric.commands import operate
from trustfabric.commands.common import offline_operator_authority
from trustfabric.console import data
from trustfabric.control.errors import ControlRefused
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import OperatorCredential, SessionIssuer, make_proof
from trustfabric.identity.plane import IdentityPlane

HERE = Path(__file__).parent
COOKIE = "tf_console"
LOGIN_COOKIE = "tf_console_login"
PAGES = ("overview", "decisions", "map", "incidents", "killswitch", "identities", "audit", "reports")
LOGIN_ATTEMPTS_PER_MIN = 10


@dataclass
class ConsoleSession:
    user: str
    role: str
    token: str  # the operator session (JWT bound to the console's machine key)
    csrf: str
    created: float
    last_seen: float


@dataclass
class ConsoleConfig:
    home: Path
    secure: bool = True  # the cookie's Secure flag (HTTPS)
    idle_s: float = 900.0
    stream_max_per_s: int = 50
    poll_s: float = 0.25


@dataclass
class _State:
    sessions: dict[str, ConsoleSession] = field(default_factory=dict)
    logins: dict[str, list[float]] = field(default_factory=dict)  # source -> recent attempt times
    rates: data.Rates = field(default_factory=data.Rates)


class Console:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.home = Path(config.home)
        self.machine_key = Ed25519PrivateKey.generate()  # never leaves this process
        self.state = _State()
        self._lock = threading.Lock()  # the identity plane's SQLite store: one request at a time
        self._plane: IdentityPlane | None = None
        self._authority = None
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=jinja2.select_autoescape(["html"]))

    # -- identity plane ------------------------------------------------------------------
    def plane(self) -> IdentityPlane:
        if self._plane is None:
            self._plane = IdentityPlane(self.home)
            self._authority = offline_operator_authority(self._plane)
        return self._plane

    def close(self) -> None:
        if self._plane is not None:
            self._plane.close()
            self._plane = None

    def _login(self, user: str, password: str, totp: str) -> ConsoleSession:
        with self._lock:
            plane = self.plane()
            session = SessionIssuer.for_plane(plane).login(user, password, totp, self.machine_key.public_key(),
                                                           plane.clock.now())
        now = time.time()
        return ConsoleSession(session.user, session.role, session.token, secrets.token_urlsafe(32), now, now)

    def credential(self, s: ConsoleSession, action: str, target: str, step_up: str = "") -> OperatorCredential:
        return OperatorCredential(user=s.user, session=s.token, step_up=step_up,
                                  proof=make_proof(self.machine_key, s.token, action, target, time.time()))

    def authorize_page(self, s: ConsoleSession, page: str) -> None:
        """Cedar on ``operator.console.<page>`` for this person, audited; raises a typed refusal."""
        action = f"console.{page}"
        with self._lock:
            plane = self.plane()
            self._authority.authorize(self.credential(s, action, "console"), action, "console", plane.clock.now())

    def can(self, s: ConsoleSession, action: str) -> bool:
        """Whether the person's role may ``action`` (to show its button; the control plane decides the POST)."""
        with self._lock:
            self.plane()
            return self._authority.permitted(s.user, s.role, action, time.time())

    # -- sessions, CSRF --------------------------------------------------------------------
    def session_of(self, request: Request) -> ConsoleSession | None:
        sid = request.cookies.get(COOKIE, "")
        s = self.state.sessions.get(sid)
        if s is None:
            return None
        now = time.time()
        if now - s.last_seen > self.config.idle_s:
            self.state.sessions.pop(sid, None)
            return None
        s.last_seen = now
        return s

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, httponly=True, secure=self.config.secure, samesite="strict",
                            max_age=max_age, path="/")

    def render(self, template: str, request: Request, s: ConsoleSession | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        floor = data.manifest(self.home)
        body = self.templates.get_template(template).render(
            user=s.user if s else "", role=s.role if s else "", csrf=s.csrf if s else "",
            pages=PAGES, path=request.url.path, floor_running=data.floor_running(floor), **context)
        response = HTMLResponse(body, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _reports(home: Path) -> list[Path]:
    """The simulator's reports and the compliance evidence under the home (newest first)."""
    found = [p for p in home.rglob("*") if p.is_file() and (
        (p.name == "report.html") or (p.suffix in (".html", ".json") and "evidence" in p.name))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:30]


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) if ts else ""


def create_app(config: ConsoleConfig) -> Starlette:
    console = Console(config)
    console.templates.filters["t"] = _fmt_time

    async def page_guard(request: Request, page: str) -> tuple[ConsoleSession | None, Response | None]:
        s = console.session_of(request)
        if s is None:
            return None, RedirectResponse("/login", status_code=303)
        try:
            await run_in_threadpool(console.authorize_page, s, page)
        except TrustFabricError as exc:
            return s, console.render("denied.html", request, s, status=403, reason=exc.reason, detail=exc.detail)
        return s, None

    async def csrf_guard(request: Request) -> tuple[ConsoleSession | None, dict, Response | None]:
        """A POST: a live session and its CSRF token, or a refusal before anything is read further."""
        form = dict(await request.form())
        s = console.session_of(request)
        if s is None:
            return None, form, JSONResponse({"reason": "console.not_logged_in"}, status_code=401)
        token = str(form.get("csrf", ""))
        if not token or not hmac.compare_digest(token, s.csrf):
            return s, form, JSONResponse({"reason": "console.csrf"}, status_code=403)
        return s, form, None

    # -- login ---------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = console.render("login.html", request, None, login_csrf=token, error="")
        console.set_cookie(response, LOGIN_COOKIE, token, max_age=600)
        return response

    async def login(request: Request) -> Response:
        form = dict(await request.form())
        token = str(form.get("csrf", ""))
        if not token or not hmac.compare_digest(token, request.cookies.get(LOGIN_COOKIE, "")):
            return JSONResponse({"reason": "console.csrf"}, status_code=403)
        source = request.client.host if request.client else "?"
        now = time.time()
        recent = [t for t in console.state.logins.get(source, []) if now - t < 60]
        if len(recent) >= LOGIN_ATTEMPTS_PER_MIN:
            return console.render("login.html", request, None, status=429, login_csrf=token,
                                  error="console.login_rate: too many attempts, wait a minute")
        console.state.logins[source] = recent + [now]
        try:
            s = await run_in_threadpool(console._login, str(form.get("user", "")), str(form.get("password", "")),
                                        str(form.get("totp", "")))
        except TrustFabricError as exc:
            return console.render("login.html", request, None, status=401, login_csrf=token,
                                  error=f"{exc.reason}: {exc.detail}")
        sid = secrets.token_urlsafe(32)
        console.state.sessions[sid] = s
        response = RedirectResponse("/", status_code=303)
        console.set_cookie(response, COOKIE, sid)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(request: Request) -> Response:
        s, _form, refused = await csrf_guard(request)
        if refused is not None:
            return refused
        console.state.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages -----------------------------------------------------------------------------
    async def overview(request: Request) -> Response:
        s, refused = await page_guard(request, "overview")
        if refused is not None:
            return refused
        rows = await run_in_threadpool(data.services, console.home, console.state.rates)
        incidents = await run_in_threadpool(data.incidents, console.home, 10)
        alerts = await run_in_threadpool(data.alerts, console.home, 10)
        return console.render("overview.html", request, s, services=rows, incidents=incidents, alerts=alerts)

    async def decisions(request: Request) -> Response:
        s, refused = await page_guard(request, "decisions")
        if refused is not None:
            return refused
        return console.render("decisions.html", request, s, max_per_s=config.stream_max_per_s)

    async def decisions_stream(request: Request) -> Response:
        s, refused = await page_guard(request, "decisions")
        if refused is not None:
            return refused
        want = {k: request.query_params.get(k, "") for k in ("principal", "action", "decision", "reason")}

        async def events() -> AsyncIterator[bytes]:
            tail = data.AuditTail(console.home)
            try:
                position = await run_in_threadpool(tail.size)
                yield b": live decisions\n\n"
                budget = max(1, int(config.stream_max_per_s * config.poll_s))
                while not await request.is_disconnected():
                    # above the rate only the newest records are read (the floor's log may grow by tens of
                    # thousands a second; the console never reads them all): the rows say they are sampled
                    rows, position, skipped = await run_in_threadpool(tail.read, position, budget * 4)
                    picked = [r for r in (data.record_dict(x) for x in rows)
                              if r["kind"] == "decision" and all(not v or r[k] == v for k, v in want.items())]
                    sampled = skipped > 0 or len(picked) > budget
                    picked = picked[-budget:]
                    for r in picked:
                        r["sampled"] = sampled
                        yield f"data: {json.dumps(r)}\n\n".encode()
                    await asyncio.sleep(config.poll_s)
            finally:
                tail.close()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def segment_map(request: Request) -> Response:
        s, refused = await page_guard(request, "map")
        if refused is not None:
            return refused
        graph = await run_in_threadpool(data.segment_map, console.home)
        return console.render("map.html", request, s, graph=graph, graph_json=json.dumps(graph))

    async def segment_map_json(request: Request) -> Response:
        s, refused = await page_guard(request, "map")
        if refused is not None:
            return refused
        return JSONResponse(await run_in_threadpool(data.segment_map, console.home))

    async def incidents_page(request: Request) -> Response:
        s, refused = await page_guard(request, "incidents")
        if refused is not None:
            return refused
        rows = await run_in_threadpool(data.incidents, console.home)
        topo = data.topology()
        return console.render("incidents.html", request, s, incidents=rows, services=sorted(topo.services),
                              can_quarantine=console.can(s, "quarantine"), can_release=console.can(s, "release"),
                              message=request.query_params.get("m", ""))

    async def act(request: Request, action: str, target: str, args: dict[str, str], step_up: str,
                  s: ConsoleSession) -> tuple[bool, str, dict]:
        """An operator request to the running floor; (ok, message, result)."""
        def refuse_offline(_operator):
            raise ControlRefused("no floor is running: the console acts on a running floor only",
                                 reason="console.no_floor")

        credential = console.credential(s, action, target, step_up)
        try:
            outcome = await run_in_threadpool(operate.apply, action, target, args, credential, refuse_offline)
        except TrustFabricError as exc:
            return False, f"{exc.reason}: {exc.detail}", {}
        return True, f"{action} {target}: {outcome.where()}", dict(outcome.result)

    def outcome_page(path: str, ok: bool, message: str) -> Response:
        """Back to ``path`` after an action, its outcome shown as the page's message."""
        return RedirectResponse(f"{path}?m={'ok' if ok else 'refused'}: {message}"[:400], status_code=303)

    async def quarantine(request: Request) -> Response:
        s, form, refused = await csrf_guard(request)
        if refused is not None:
            return refused
        target = str(form.get("principal", ""))
        ok, message, _ = await act(request, "quarantine", target, {"reason": str(form.get("reason", ""))[:200]},
                                   "", s)
        return JSONResponse({"ok": ok, "message": message}, status_code=200 if ok else 403) \
            if request.headers.get("accept") == "application/json" \
            else outcome_page("/incidents", ok, message)

    async def release(request: Request) -> Response:
        s, form, refused = await csrf_guard(request)
        if refused is not None:
            return refused
        target = str(form.get("principal", ""))
        ok, message, _ = await act(request, "release", target, {}, str(form.get("totp", "")), s)
        return outcome_page("/incidents", ok, message)

    async def killswitch_page(request: Request) -> Response:
        s, refused = await page_guard(request, "killswitch")
        if refused is not None:
            return refused
        stats = await run_in_threadpool(data.floor_stats, console.home)
        risk = stats.get("pre-trade-risk", {})
        states = {k: v for k, v in sorted(risk.items()) if k.startswith("killswitch")}
        return console.render("killswitch.html", request, s, states=states,
                              can_halt=console.can(s, "killswitch.halt"), can_resume=console.can(s, "killswitch.resume"),
                              message=request.query_params.get("m", ""))

    async def killswitch(request: Request) -> Response:
        s, form, refused = await csrf_guard(request)
        if refused is not None:
            return refused
        command = str(form.get("command", ""))
        if command not in ("halt", "reduce", "resume"):
            return JSONResponse({"reason": "console.bad_command"}, status_code=400)
        scope, target = str(form.get("scope", "firm")), str(form.get("target", ""))
        ok, message, result = await act(request, f"killswitch.{command}", target if scope != "firm" else "",
                                        {"scope": scope}, str(form.get("totp", "")), s)
        if ok and result:
            message += " (" + ", ".join(f"{k}={v}" for k, v in sorted(result.items())) + ")"
        return outcome_page("/killswitch", ok, message)

    async def identities(request: Request) -> Response:
        s, refused = await page_guard(request, "identities")
        if refused is not None:
            return refused
        rows = await run_in_threadpool(data.workloads, console.home)
        people = await run_in_threadpool(data.people, console.home)
        cut = await run_in_threadpool(data.quarantined, console.home)
        return console.render("identities.html", request, s, services=rows, people=people, quarantined=cut)

    async def audit(request: Request) -> Response:
        s, refused = await page_guard(request, "audit")
        if refused is not None:
            return refused
        q = {k: request.query_params.get(k, "") for k in ("principal", "trace", "decision")}
        rows = await run_in_threadpool(lambda: data.audit_query(console.home, **q))
        return console.render("audit.html", request, s, rows=rows, q=q, verify=request.query_params.get("v", ""))

    async def audit_verify(request: Request) -> Response:
        s, _form, refused = await csrf_guard(request)
        if refused is not None:
            return refused
        try:
            await run_in_threadpool(console.authorize_page, s, "audit")
        except TrustFabricError as exc:
            return JSONResponse({"reason": exc.reason}, status_code=403)

        def run() -> str:
            log = open_log(console.home / "audit")
            try:
                report = verify_log(log.store, load_public_key(console.home / "audit"))
            finally:
                log.close()
            return (f"intact: {report.size} records, root {report.root_hash[:16]}..., "
                    f"{report.tree_heads_checked} signed tree heads")

        try:
            text = await run_in_threadpool(run)
        except TrustFabricError as exc:
            text = f"NOT intact: {exc.reason}: {exc.detail}"
        return RedirectResponse(f"/audit?v={text}"[:400], status_code=303)

    async def audit_proof(request: Request) -> Response:
        s, refused = await page_guard(request, "audit")
        if refused is not None:
            return refused
        index = int(request.path_params["index"])

        def run() -> dict:
            log = open_log(console.home / "audit")
            try:
                return log.prove_inclusion(index)
            finally:
                log.close()

        try:
            proof = await run_in_threadpool(run)
        except TrustFabricError as exc:
            return JSONResponse({"reason": exc.reason, "detail": exc.detail}, status_code=404)
        return JSONResponse(proof, headers={"Content-Disposition": f'attachment; filename="inclusion-{index}.json"'})

    async def reports(request: Request) -> Response:
        s, refused = await page_guard(request, "reports")
        if refused is not None:
            return refused
        found = await run_in_threadpool(_reports, console.home)
        return console.render("reports.html", request, s,
                              reports=[(str(p.relative_to(console.home)), time.strftime(
                                  "%Y-%m-%d %H:%M", time.gmtime(p.stat().st_mtime))) for p in found])

    async def report_file(request: Request) -> Response:
        s, refused = await page_guard(request, "reports")
        if refused is not None:
            return refused
        wanted = request.query_params.get("path", "")
        found = {str(p.relative_to(console.home)): p for p in await run_in_threadpool(_reports, console.home)}
        path = found.get(wanted)  # only a report the listing shows: no path from the request is opened
        if path is None:
            return JSONResponse({"reason": "console.no_such_report"}, status_code=404)
        media = "text/html" if path.suffix == ".html" else "application/json"
        response = Response(path.read_bytes(), media_type=media)
        response.headers["Content-Security-Policy"] = "default-src 'self' data:; style-src 'self' 'unsafe-inline'"
        return response

    routes = [
        Route("/login", login_page, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview), Route("/decisions", decisions), Route("/decisions/stream", decisions_stream),
        Route("/map", segment_map), Route("/map.json", segment_map_json),
        Route("/incidents", incidents_page), Route("/incidents/quarantine", quarantine, methods=["POST"]),
        Route("/incidents/release", release, methods=["POST"]),
        Route("/killswitch", killswitch_page), Route("/killswitch", killswitch, methods=["POST"]),
        Route("/identities", identities), Route("/audit", audit), Route("/audit/verify", audit_verify, methods=["POST"]),
        Route("/audit/proof/{index:int}", audit_proof), Route("/reports", reports),
        Route("/reports/file", report_file),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        console.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    return app
