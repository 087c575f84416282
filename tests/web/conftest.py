"""Fixtures for the browser tests: a real mesh whose Envoy allows the page's origin, the built page
served on that origin, and a headless Chromium per test that saves a screenshot when the test ends.

The mesh runs the real LiveKit server, so a page that starts a call really joins its room (Chromium's
fake microphone). `livekit_unreachable` kills that server for one test: the page is handed the URL
of a closed port, as when the call server is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
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
from tests.web.browser import Browser

# Git-ignored (screenshots/ is in .gitignore); one PNG per test, named after it.
SCREENSHOT_DIR = ROOT / "screenshots" / "web"


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


@pytest.fixture(scope="session")
def web_mesh(
    store: StoreLike, built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebMesh]:
    workdir = tmp_path_factory.mktemp("web-mesh")
    page_port, foreign_port = free_port(), free_port()
    page_url = f"http://127.0.0.1:{page_port}"
    mesh = start_test_mesh(store, workdir, with_chat=True, cors_allowed_origins=(page_url,))
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
