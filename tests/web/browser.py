"""A headless Chromium for tests, driven through web/e2e/driver.mjs (playwright-core on Debian's chromium).

The node process runs one JSON command per line; this wrapper sends them and waits for the answers,
so the scenario and every assertion stay in Python next to the API checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from devrun.launch import ROOT

DRIVER = ROOT / "web" / "e2e" / "driver.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Generous: a command itself carries the wait the test means; this only catches a hung driver.
REPLY_TIMEOUT_SECONDS = 60.0


def _missing_prerequisite() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/bootstrap.sh does it)"
    if not (ROOT / "web" / "node_modules" / "playwright-core").is_dir():
        return "web/node_modules is missing: run `scripts/bootstrap.sh dev`"
    return None


@dataclass(frozen=True)
class BrowserOptions:
    """How Chromium stands in for a person (web/e2e/driver.mjs reads these at launch).

    Attributes:
        fake_audio_file: A WAV the fake microphone plays once, from the moment the page opens the
            microphone (then silence); None for Chromium's built-in beep.
        autoplay: Chromium's `--autoplay-policy`, or None for Chromium's own default (sound may play
            once the person has clicked on the page).
        media: "allow" answers camera, microphone and screen requests with yes; "deny" with no, as a
            person clicking "Block" would.
    """

    fake_audio_file: Path | None = None
    autoplay: str | None = None
    media: Literal["allow", "deny"] = "allow"

    def to_json(self) -> str:
        options: dict[str, str] = {"media": self.media}
        if self.fake_audio_file is not None:
            options["fakeAudioFile"] = str(self.fake_audio_file.resolve())
        if self.autoplay is not None:
            options["autoplay"] = self.autoplay
        return json.dumps(options)


class BrowserError(AssertionError):
    """A browser command failed (element not found in time, script error, ...)."""


class Browser:
    """One Chromium with one page. Use `await Browser.launch()` and `await browser.close()`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._next_id = 0

    @classmethod
    async def launch(cls, options: BrowserOptions | None = None) -> Browser:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed; the browser tests need Node.js 20+")
        problem = _missing_prerequisite()
        if problem:
            raise RuntimeError(problem)
        process = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            (options or BrowserOptions()).to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "CHROMIUM_PATH": str(CHROMIUM)},
            start_new_session=True,
        )
        browser = cls(process)
        hello = await browser._read()  # the driver says hello once Chromium is up
        if not hello.get("ok"):
            raise RuntimeError(f"the browser did not start: {hello}")
        return browser

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), REPLY_TIMEOUT_SECONDS)
        if not line:
            stderr = b""
            if self._process.stderr is not None:
                stderr = await self._process.stderr.read()
            raise RuntimeError(f"the browser driver exited: {stderr.decode(errors='replace')[-2000:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def command(self, cmd: str, **args: Any) -> Any:
        """Runs one driver command; returns its value or raises BrowserError with the driver's message."""
        self._next_id += 1
        request = {"id": self._next_id, "cmd": cmd, **args}
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        await self._process.stdin.drain()
        reply = await self._read()
        if reply.get("id") != self._next_id:
            raise RuntimeError(f"out-of-order reply from the browser driver: {reply}")
        if not reply.get("ok"):
            raise BrowserError(f"{cmd} {args}: {reply.get('error')}")
        return reply.get("value")

    # Thin helpers over the driver's commands, named as a test reads them.

    async def init_script(self, source: str) -> None:
        """Runs the JS `source` in every page before the page's own scripts (set it before `goto`)."""
        await self.command("initScript", source=source)

    async def goto(self, url: str) -> Any:
        return await self.command("goto", url=url)

    async def fill(self, selector: str, value: str) -> None:
        await self.command("fill", selector=selector, value=value)

    async def click(self, selector: str) -> None:
        await self.command("click", selector=selector)

    async def press_enter(self, selector: str) -> None:
        await self.command("press", selector=selector, key="Enter")

    async def wait(self, selector: str, *, state: str = "visible", timeout_ms: int = 10_000) -> None:
        await self.command("wait", selector=selector, state=state, timeout=timeout_ms)

    async def wait_for(self, expression: str, arg: Any = None, *, timeout_ms: int = 10_000) -> Any:
        """Waits until the JS function source `expression(arg)` returns something truthy; returns it."""
        return await self.command("waitFor", expression=expression, arg=arg, timeout=timeout_ms)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.command("eval", expression=expression, arg=arg)

    async def text(self, selector: str) -> str:
        value = await self.command("text", selector=selector)
        return str(value or "")

    async def attribute(self, selector: str, name: str) -> str | None:
        value = await self.command("attr", selector=selector, name=name)
        return None if value is None else str(value)

    async def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.command("screenshot", path=str(path))
        return path

    async def console(self) -> list[str]:
        lines = await self.command("console")
        return [str(line) for line in lines]

    async def close(self) -> None:
        if self._process.returncode is None:
            try:
                await self.command("close")
            except (RuntimeError, BrowserError, TimeoutError, ConnectionError):
                pass
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            # The whole group: Chromium's processes must not outlive a hung driver.
            os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
