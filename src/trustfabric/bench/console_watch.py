"""A console watching a floor, for ``bench floor --console``: the console process and a browser on its live page.

The console runs as its own process (``trustfabric console --http``; nothing imports the
console package) against the floor's home; a person (an auditor enrolled for the bench)
logs in once with password and TOTP. The watcher is Debian's Chromium driven by
Playwright when both are installed (a real browser with the live decisions page open,
its EventSource streaming), else an HTTP client holding the same Server-Sent Events
stream; :attr:`ConsoleWatcher.kind` says which. :meth:`watch` opens the live page,
:meth:`unwatch` leaves it (the console stays up, idle), so rounds can alternate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyotp

PASSWORD = "bench-watcher-password-1"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class ConsoleWatcher:
    def __init__(self, home: Path, users: Any) -> None:
        self.home = Path(home)
        self.totp = pyotp.TOTP(users.enrol("bench-watcher", "auditor", PASSWORD, time.time()).totp_secret)
        self.proc: asyncio.subprocess.Process | None = None
        self.base = ""
        self.kind = ""
        self.events = 0
        self._pw: Any = None
        self._browser: Any = None
        self._page: Any = None
        self._client: Any = None
        self._stream: asyncio.Task | None = None

    async def start(self) -> "ConsoleWatcher":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trustfabric.cli", "console", "--http", "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "TRUSTFABRIC_HOME": str(self.home), "COLUMNS": "300"})
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if "console on " not in line:
            raise RuntimeError(f"the console did not start: {line!r}")
        self.base = line.split("console on ", 1)[1].split()[0]
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        try:
            from playwright.async_api import async_playwright  # a dev dependency: the real browser when present

            if not Path(chromium).exists():
                raise ImportError("no chromium")
            self._pw = await async_playwright().start()
            self._browser = await self._pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            self._page = await self._browser.new_page()
            await self._page.goto(self.base + "login")
            await self._page.fill("input[name=user]", "bench-watcher")
            await self._page.fill("input[name=password]", PASSWORD)
            await self._page.fill("input[name=totp]", self.totp.now())
            await self._page.click("button[type=submit]")
            await self._page.wait_for_selector("#services")
            self.kind = "chromium"
        except ImportError:
            import httpx  # the same stream a browser's EventSource holds

            self._client = httpx.AsyncClient(base_url=self.base, timeout=None)
            page = await self._client.get("/login")
            token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            await self._client.post("/login", data={"user": "bench-watcher", "password": PASSWORD,
                                                    "totp": self.totp.now(), "csrf": token})
            self.kind = "sse-client"
        return self

    async def watch(self) -> None:
        if self._page is not None:
            await self._page.goto(self.base + "decisions")
            await self._page.wait_for_selector("#decisions")
            return

        async def consume() -> None:
            async with self._client.stream("GET", "/decisions/stream") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        self.events += 1

        self._stream = asyncio.get_running_loop().create_task(consume())

    async def rows(self) -> int:
        if self._page is not None:
            return await self._page.eval_on_selector_all("#decisions tbody tr", "rows => rows.length")
        return self.events

    async def unwatch(self) -> None:
        if self._page is not None:
            await self._page.goto("about:blank")  # the EventSource closes with the page
            return
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(BaseException):
                await self._stream
            self._stream = None

    async def stop(self) -> None:
        await self.unwatch()
        if self._browser is not None:
            await self._browser.close()
        if self._pw is not None:
            await self._pw.stop()
        if self._client is not None:
            await self._client.aclose()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)
