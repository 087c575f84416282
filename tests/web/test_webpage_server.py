"""devrun.webpage: the page's static server and its build check (real sockets, temporary folders)."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devrun.webpage import PageBuildError, make_server, needs_build

pytestmark = pytest.mark.unit


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "web" / "dist"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>page</title>")
    (folder / "assets" / "app.js").write_text("console.log('app')")
    (folder / "config.json").write_text('{"apiBaseUrl": ""}')
    return folder


@pytest.fixture
def served(dist: Path) -> Iterator[str]:
    server = make_server(dist, "127.0.0.1", 0, "http://edge.example:8080/")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test server
        return response.status, dict(response.headers), response.read()


def test_config_json_names_the_configured_edge_not_the_built_file(served: str) -> None:
    status, headers, body = get(f"{served}/config.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert json.loads(body) == {"apiBaseUrl": "http://edge.example:8080"}


def test_built_files_are_served(served: str) -> None:
    assert b"<title>page</title>" in get(f"{served}/")[2]
    status, headers, body = get(f"{served}/assets/app.js")
    assert (status, body) == (200, b"console.log('app')")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_serving_without_a_build_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PageBuildError, match="build the page first"):
        make_server(tmp_path, "127.0.0.1", 0, "http://edge.example:8080")


def test_needs_build_follows_the_sources(dist: Path) -> None:
    web = dist.parent
    source = web / "src" / "main.ts"
    source.parent.mkdir()
    source.write_text("export {}")
    built = dist / "index.html"
    os.utime(source, (1_000, 1_000))
    os.utime(built, (2_000, 2_000))
    assert needs_build(web) is False
    os.utime(source, (3_000, 3_000))
    assert needs_build(web) is True
    built.unlink()
    assert needs_build(web) is True
