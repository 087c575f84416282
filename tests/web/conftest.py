"""Fixtures for the browser tests: a real mesh whose Envoy allows the page's origin, the built page
served on that origin, and a headless Chromium per test that saves a screenshot when the test ends.

The mesh runs the real LiveKit server, so a page that starts a call really joins its room (Chromium's
fake microphone). `livekit_unreachable` kills that server for one test: the page is handed the URL
of a closed port, as when the call server is down.

`call_mesh` is a second mesh with the voice worker, for calls with an agent that greets, listens and
answers; its call tokens live only `CALL_TOKEN_TTL_SECONDS`, so every call outlives its first token.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from devrun.launch import ROOT
from devrun.ports import free_port, port_open
from devrun.processes import ManagedProcess
from devrun.webpage import ensure_built, page_command
from tests.support.identity import user_token
from tests.support.mesh import LIVEKIT, Mesh, StoreLike, start_test_mesh
from tests.web.browser import Browser, BrowserOptions

# Git-ignored (screenshots/ is in .gitignore); one PNG per test, named after it, or a folder per test
# with one PNG per state the test looked at.
SCREENSHOT_DIR = ROOT / "screenshots" / "web"
# Short enough that a call test outlives its first token (the page must fetch fresh ones), long enough
# that the page is not doing little else.
CALL_TOKEN_TTL_SECONDS = 20
# What a call mesh's services run with on top of the defaults.
CALL_ENV = {
    "LIVEKIT_TOKEN_TTL_SECONDS": str(CALL_TOKEN_TTL_SECONDS),
    "LIVEKIT_TOKEN_TTL_MIN_SECONDS": "5",
}


@dataclass(frozen=True)
class WebMesh:
    """The mesh plus the page.

    Attributes:
        mesh: The running services, the real LiveKit server and Envoy.
        page_url: Origin serving the page; Envoy's CORS policy allows it.
        foreign_page_url: The same page served on an origin Envoy does NOT allow.
    """

    mesh: Mesh
    page_url: str
    foreign_page_url: str

    @property
    def chat_addr(self) -> str:
        assert self.mesh.chat_addr is not None, "the browser tests need chat_svc"
        return self.mesh.chat_addr


def _serve_page(name: str, port: int, api_url: str, log_dir: Path) -> ManagedProcess:
    proc = ManagedProcess(name, page_command(port, api_url), log_dir / f"{name}.log", cwd=ROOT).start()
    try:
        proc.wait_for_port("127.0.0.1", port, timeout=30)
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture(scope="session")
def built_page() -> Path:
    """Builds web/ with Vite unless the build is current (needs web/node_modules: bootstrap installs it)."""
    return ensure_built()


@contextmanager
def _running_web_mesh(
    store: StoreLike, workdir: Path, *, with_worker: bool = False, extra_env: Mapping[str, str] | None = None
) -> Iterator[WebMesh]:
    page_port, foreign_port = free_port(), free_port()
    page_url = f"http://127.0.0.1:{page_port}"
    mesh = start_test_mesh(
        store,
        workdir,
        with_chat=True,
        with_worker=with_worker,
        cors_allowed_origins=(page_url,),
        extra_env=extra_env,
    )
    pages: list[ManagedProcess] = []
    try:
        assert mesh.envoy_url is not None
        pages.append(_serve_page("page", page_port, mesh.envoy_url, workdir / "logs"))
        pages.append(_serve_page("foreign-page", foreign_port, mesh.envoy_url, workdir / "logs"))
        yield WebMesh(mesh, page_url, f"http://127.0.0.1:{foreign_port}")
    finally:
        for proc in reversed(pages):
            proc.stop()
        mesh.close()


@pytest.fixture(scope="session")
def web_mesh(
    store: StoreLike, built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebMesh]:
    with _running_web_mesh(store, tmp_path_factory.mktemp("web-mesh")) as running:
        yield running


@pytest.fixture(scope="session")
def call_mesh(
    store: StoreLike, built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebMesh]:
    """A web mesh with the voice worker (offline providers): calls have an agent that talks.

    Kept apart from `web_mesh`, where an agent joining every voice conversation would add its turns
    to transcripts those tests count exactly. Tests that stop its processes build their own with
    `_running_web_mesh(..., with_worker=True, extra_env=CALL_ENV)` instead.
    """
    with _running_web_mesh(
        store, tmp_path_factory.mktemp("call-mesh"), with_worker=True, extra_env=CALL_ENV
    ) as mesh:
        yield mesh


@pytest.fixture
def livekit_unreachable(web_mesh: WebMesh) -> Iterator[str]:
    """The mesh's LiveKit server killed for this test, started again (same port) afterwards.

    Yields its URL, which agent_svc still hands out in tokens and which nothing answers now.
    """
    mesh = web_mesh.mesh
    mesh.kill(LIVEKIT)
    assert not port_open("127.0.0.1", mesh.livekit.port), "the LiveKit port should be closed"
    try:
        yield mesh.livekit.ws_url
    finally:
        mesh.start(LIVEKIT)


@pytest.fixture
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    """A fresh Chromium; its last screen is saved as screenshots/web/<test>.png, pass or fail."""
    running = await Browser.launch()
    try:
        yield running
    finally:
        name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in request.node.name)
        try:
            await running.screenshot(SCREENSHOT_DIR / f"{name}.png")
        finally:
            await running.close()


def _test_name(request: pytest.FixtureRequest) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in request.node.name)


class Screens:
    """Screenshots of the states a test looked at, in order: screenshots/web/<test>/NN-<state>.png."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    async def take(self, browser: Browser, state: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{state}.png"
        self.taken.append(await browser.screenshot(path))
        return path


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    """This test's screenshot folder, emptied first so it never shows an older run's states."""
    folder = SCREENSHOT_DIR / _test_name(request)
    shutil.rmtree(folder, ignore_errors=True)
    return Screens(folder)


LaunchBrowser = Callable[[BrowserOptions], Awaitable[Browser]]


@pytest.fixture
async def launch_browser(screens: Screens) -> AsyncIterator[LaunchBrowser]:
    """Starts Chromium with the given options; each one's last screen is saved in the test's folder."""
    running: list[Browser] = []

    async def launch(options: BrowserOptions) -> Browser:
        browser = await Browser.launch(options)
        running.append(browser)
        return browser

    yield launch
    for index, browser in enumerate(running):
        try:
            await browser.screenshot(screens.folder / f"last-{index + 1}.png")
        except (RuntimeError, AssertionError, TimeoutError):
            pass  # a browser that died already said why in the test's failure
        finally:
            await browser.close()


@pytest.fixture
def user_id() -> str:
    """A user of its own per test, so conversation lists never mix between tests."""
    return f"web-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token(user_id: str) -> str:
    return user_token(user_id)


@pytest.fixture
async def chat_channel(web_mesh: WebMesh) -> AsyncIterator[grpc.aio.Channel]:
    """Direct gRPC to chat_svc, for checking what the page did and for playing the voice worker."""
    async with grpc.aio.insecure_channel(web_mesh.chat_addr) as channel:
        yield channel


@pytest.fixture
async def chat_channel_call(call_mesh: WebMesh) -> AsyncIterator[grpc.aio.Channel]:
    """Direct gRPC to the call mesh's chat_svc, for checking what the calls stored."""
    async with grpc.aio.insecure_channel(call_mesh.chat_addr) as channel:
        yield channel
