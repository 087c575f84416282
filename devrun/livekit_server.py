"""The open-source LiveKit server on loopback, for `make run`, the tests and the benchmarks.

`scripts/bootstrap.sh` builds it (`go install github.com/livekit/livekit-server/cmd/server@PIN`) into
the git-ignored `.tools/bin/livekit-server`. This module renders its config, starts it and says when
it is ready. What the config does, as read from the server's code at the pinned tag and checked by
running it here:

- HTTP/WebSocket (signalling, the Twirp server API, `/agent` for workers) on `port`, bound to
  127.0.0.1 only (`bind_addresses`).
- Media over UDP only, on a small muxed port range, bound per local address and filtered to
  127.0.0.1 (`rtc.ips.includes`), with loopback candidates enabled and no external-IP discovery
  (`use_external_ip: false`, `node_ip`, no STUN servers: nothing leaves the machine).
- ICE/TCP is off (`tcp_port: 0`): the server listens for it on every interface, not only on the
  bind address, and UDP on loopback needs no fallback.
- API keys are passed in the environment (`LIVEKIT_KEYS`), never written to the config file.
- Webhooks, when URLs are given, are signed with the same API key.

The config is JSON, which YAML parsers (the server's included) read as YAML.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devrun.launch import ROOT
from devrun.processes import ManagedProcess

TOOLS_BIN = ROOT / ".tools" / "bin"
BINARY_NAME = "livekit-server"
DEFAULT_PORT = 7880
# Two UDP ports: the server opens one mux per CPU up to the range's size; two serve a laptop's calls.
DEFAULT_UDP_PORTS = 2
START_TIMEOUT_SECONDS = 30.0
# Where the edge takes LiveKit's webhooks (CallService.ReceiveWebhook through Envoy).
WEBHOOK_PATH = "/api/livekit/webhook"
REPEAT_TERM_AFTER_SECONDS = 0.5


class LiveKitServerMissing(RuntimeError):
    """The LiveKit server binary has not been built (`scripts/bootstrap.sh` builds it when Go exists)."""


@dataclass(frozen=True)
class LiveKitKeys:
    """One API key and its secret (the server accepts tokens signed with them)."""

    api_key: str
    api_secret: str = field(repr=False)

    @classmethod
    def generate(cls) -> LiveKitKeys:
        """Keys for one run: nothing to configure, nothing reused, a secret of the length LiveKit wants."""
        return cls(f"syntera-{secrets.token_hex(4)}", secrets.token_urlsafe(36))


@dataclass(frozen=True)
class LiveKitServerConfig:
    """Everything the rendered config depends on.

    Attributes:
        keys: The API key and secret the server accepts.
        port: HTTP/WebSocket port on 127.0.0.1 (`LIVEKIT_PORT`).
        udp_port_start: First UDP media port; `udp_ports` ports from there. Default: `port` + 2.
        udp_ports: How many UDP media ports.
        webhook_urls: Where the server POSTs signed webhooks (none: webhooks off).
        empty_timeout_seconds: How long a room nobody joined is kept.
        departure_timeout_seconds: How long a room is kept after its last participant left.
        log_level: The server's log level (debug, info, warn, error).
    """

    keys: LiveKitKeys
    port: int = DEFAULT_PORT
    udp_port_start: int = 0
    udp_ports: int = DEFAULT_UDP_PORTS
    webhook_urls: tuple[str, ...] = ()
    empty_timeout_seconds: int = 300
    departure_timeout_seconds: int = 20
    log_level: str = "info"

    @property
    def udp_range(self) -> tuple[int, int]:
        start = self.udp_port_start or self.port + 2
        return start, start + self.udp_ports - 1

    @property
    def ws_url(self) -> str:
        """What clients, agent_svc and the voice worker are given as LIVEKIT_URL."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def webhook_endpoint(edge_url: str) -> str:
    """The webhook URL under the edge's base URL (`http://127.0.0.1:8080`)."""
    return f"{edge_url.rstrip('/')}{WEBHOOK_PATH}"


def render_config(config: LiveKitServerConfig) -> dict[str, Any]:
    """The server's config as a mapping (see the module docstring for why each key is there)."""
    start, end = config.udp_range
    rendered: dict[str, Any] = {
        "port": config.port,
        "bind_addresses": ["127.0.0.1"],
        "log_level": config.log_level,
        "rtc": {
            "udp_port": f"{start}-{end}" if end > start else str(start),
            "tcp_port": 0,
            "use_external_ip": False,
            "node_ip": "127.0.0.1",
            "enable_loopback_candidate": True,
            "ips": {"includes": ["127.0.0.1/32"]},
            "stun_servers": [],
        },
        "room": {
            "empty_timeout": config.empty_timeout_seconds,
            "departure_timeout": config.departure_timeout_seconds,
        },
    }
    if config.webhook_urls:
        rendered["webhook"] = {"api_key": config.keys.api_key, "urls": list(config.webhook_urls)}
    return rendered


def write_config(config: LiveKitServerConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render_config(config), indent=2) + "\n")
    return path


def server_binary(tools_bin: Path = TOOLS_BIN) -> Path | None:
    """The built server, or None when bootstrap could not build it (no Go)."""
    binary = tools_bin / BINARY_NAME
    return binary if binary.is_file() else None


def server_env(config: LiveKitServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: `base` without any LiveKit settings of ours, plus its keys.

    The server reads `LIVEKIT_CONFIG`, `LIVEKIT_KEYS` and other `LIVEKIT_*` variables itself; ours
    (LIVEKIT_URL, LIVEKIT_API_KEY, ...) mean something else to it or nothing, so none is passed on.
    """
    env = {k: v for k, v in (base or {}).items() if not k.startswith("LIVEKIT_")}
    env["LIVEKIT_KEYS"] = f"{config.keys.api_key}: {config.keys.api_secret}"
    return env


def server_ready(port: int, timeout: float = 1.0) -> bool:
    """True when the server answers its health path (`GET /` → 200 OK) on 127.0.0.1."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def spawn_server(
    config: LiveKitServerConfig,
    config_path: Path,
    log_path: Path,
    *,
    base_env: Mapping[str, str] | None = None,
    binary: Path | None = None,
) -> ManagedProcess:
    """Writes the config and starts the server; returns at once (see `start_server`).

    Raises:
        LiveKitServerMissing: The binary is not built.
    """
    exe = binary or server_binary()
    if exe is None:
        raise LiveKitServerMissing(
            f"{TOOLS_BIN / BINARY_NAME} is missing: run scripts/bootstrap.sh with Go 1.26+ on PATH"
        )
    write_config(config, config_path)
    return ManagedProcess(
        "livekit",
        [str(exe), "--config", str(config_path)],
        log_path,
        env=server_env(config, base_env),
        cwd=config_path.parent,
        # The server waits for connected participants to leave on the first SIGTERM, and ignores
        # one that arrives just after it started; a second SIGTERM makes it stop at once.
        repeat_term_after=REPEAT_TERM_AFTER_SECONDS,
    ).start()


def start_server(
    config: LiveKitServerConfig,
    config_path: Path,
    log_path: Path,
    *,
    base_env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_SECONDS,
) -> ManagedProcess:
    """Like `spawn_server`, then waits until the server answers."""
    proc = spawn_server(config, config_path, log_path, base_env=base_env)
    try:
        proc.wait_until(lambda: server_ready(config.port), timeout, f"answering on {config.http_url}")
    except BaseException:
        proc.stop()
        raise
    return proc
