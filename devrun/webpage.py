"""The browser call page (web/): building it when needed and serving the built files.

The page is static; the only thing that differs between `make run`, the tests and a deployment is
where the gRPC-web edge is, so the server answers `/config.json` with that address instead of the
file from the build. Run as `python -m devrun.webpage --port 5173 --api-url http://127.0.0.1:8080`.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from devrun.processes import ManagedProcess, StartupError
from devrun.readiness import port_free

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
DIST_DIR = WEB_DIR / "dist"
# What the built page depends on: a change to any of these makes `ensure_built` build again.
_BUILD_INPUTS = ("index.html", "src", "public", "package-lock.json", "vite.config.ts", "tsconfig.json")


class WebSettings(BaseSettings):
    """Where `make run` serves the page. Its origin must be in Envoy's `CORS_ALLOWED_ORIGINS`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    host: str = Field(default="127.0.0.1", validation_alias="WEB_HOST")
    port: int = Field(default=5173, ge=1, le=65535, validation_alias="WEB_PORT")

    @property
    def origin(self) -> str:
        # A wildcard bind is reached on loopback; the browser's origin is what CORS compares.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 - compared
        return f"http://{host}:{self.port}"


class PageBuildError(RuntimeError):
    """The page could not be built (no npm packages, or the build failed)."""


def _newest_mtime(paths: Iterable[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_dir():
            newest = max([newest, *(p.stat().st_mtime for p in path.rglob("*") if p.is_file())])
        elif path.exists():
            newest = max(newest, path.stat().st_mtime)
    return newest


def needs_build(web_dir: Path = WEB_DIR) -> bool:
    """True when `dist/index.html` is missing or older than any source of the page."""
    built = web_dir / "dist" / "index.html"
    if not built.exists():
        return True
    return _newest_mtime(web_dir / name for name in _BUILD_INPUTS) > built.stat().st_mtime


def ensure_built(web_dir: Path = WEB_DIR, *, force: bool = False) -> Path:
    """Builds the page with Vite unless the build is up to date; returns the dist folder.

    Raises:
        PageBuildError: web/node_modules is missing (run `scripts/bootstrap.sh`) or the build failed.
    """
    if not force and not needs_build(web_dir):
        return web_dir / "dist"
    if not (web_dir / "node_modules" / ".bin" / "vite").exists():
        raise PageBuildError(f"{web_dir}/node_modules is missing: run `scripts/bootstrap.sh run`")
    npm = shutil.which("npm")
    if npm is None:
        raise PageBuildError("npm is not installed (Node.js 20 or newer is needed to build the page)")
    result = subprocess.run(
        [npm, "run", "--silent", "build"], cwd=web_dir, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PageBuildError(f"building the page failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return web_dir / "dist"


class _PageHandler(SimpleHTTPRequestHandler):
    """Static files from the build, plus a generated `/config.json`."""

    def __init__(self, *args: object, config_body: bytes, directory: str, **kwargs: object) -> None:
        self._config_body = config_body
        super().__init__(*args, directory=directory, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/config.json":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self._config_body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self._config_body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        # The page talks only to itself and the configured edge; say so to the browser.
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        # Quiet: page requests are not interesting next to the services' structured logs.
        return


def make_server(dist_dir: Path, host: str, port: int, api_base_url: str) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for the built page; port 0 picks a free port."""
    if not (dist_dir / "index.html").exists():
        raise PageBuildError(f"{dist_dir}/index.html is missing: build the page first")
    body = json.dumps({"apiBaseUrl": api_base_url.rstrip("/")}).encode()
    handler = functools.partial(_PageHandler, config_body=body, directory=str(dist_dir))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def page_command(port: int, api_base_url: str, host: str = "127.0.0.1") -> list[str]:
    """Command line serving the already built page as its own process."""
    return [
        sys.executable,
        "-m",
        "devrun.webpage",
        "--host",
        host,
        "--port",
        str(port),
        "--api-url",
        api_base_url,
        "--no-build",
    ]


@contextmanager
def serve_for_run(api_base_url: str, allowed_origins: Sequence[str], log_path: Path) -> Iterator[None]:
    """`make run`'s page: builds it if needed, serves it for the duration, prints where.

    The page is a convenience next to the mesh: if it cannot be built or served, `make run` says why
    and runs the mesh anyway.
    """
    settings = WebSettings()
    proc: ManagedProcess | None = None
    try:
        ensure_built()
        if not port_free(settings.host, settings.port):
            raise PageBuildError(f"{settings.host}:{settings.port} is in use (set WEB_PORT to another port)")
        proc = ManagedProcess(
            "web", page_command(settings.port, api_base_url, settings.host), log_path, cwd=ROOT
        ).start()
        proc.wait_for_port(settings.host, settings.port, timeout=15)
    except (PageBuildError, StartupError) as exc:
        print(f"warning: the call page is not served: {exc}", file=sys.stderr, flush=True)
        if proc is not None:
            proc.stop()
            proc = None
    if proc is not None:
        print(f"  call page  {settings.origin}  (sign in with the dev token printed below)", flush=True)
        if settings.origin not in allowed_origins and "*" not in allowed_origins:
            print(
                f"warning: {settings.origin} is not in CORS_ALLOWED_ORIGINS: Envoy will refuse the page",
                file=sys.stderr,
                flush=True,
            )
    try:
        yield
    finally:
        if proc is not None:
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devrun.webpage", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5173)
    parser.add_argument("--api-url", required=True, help="gRPC-web edge (Envoy) base URL")
    parser.add_argument("--dist", type=Path, default=DIST_DIR)
    parser.add_argument("--no-build", action="store_true", help="serve the existing build as it is")
    args = parser.parse_args(argv)
    try:
        dist = args.dist if args.no_build else ensure_built()
        server = make_server(dist, args.host, args.port, args.api_url)
    except (PageBuildError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving the call page on http://{args.host}:{server.server_address[1]}", flush=True)
    with server:
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
