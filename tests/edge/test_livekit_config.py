"""The LiveKit server config devrun renders: loopback only, no secret in the file, and the server agrees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from devrun.livekit_server import (
    LiveKitKeys,
    LiveKitServerConfig,
    render_config,
    server_env,
    start_server,
    write_config,
)
from devrun.ports import free_port

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/* writes it


@pytest.mark.unit
def test_rendered_config_binds_loopback_only_and_holds_no_secret(tmp_path: Path) -> None:
    keys = LiveKitKeys.generate()
    config = LiveKitServerConfig(keys=keys, port=17880)
    rendered = render_config(config)
    assert rendered["port"] == 17880
    assert rendered["bind_addresses"] == ["127.0.0.1"]
    rtc = rendered["rtc"]
    assert rtc["udp_port"] == "17882-17883"  # the port plan's LIVEKIT_PORT + 2 and + 3
    assert rtc["tcp_port"] == 0  # ICE/TCP would listen on every interface
    assert rtc["use_external_ip"] is False
    assert rtc["node_ip"] == "127.0.0.1"
    assert rtc["enable_loopback_candidate"] is True
    assert rtc["ips"] == {"includes": ["127.0.0.1/32"]}
    assert rtc["stun_servers"] == []  # nothing leaves the machine
    assert "webhook" not in rendered
    written = write_config(config, tmp_path / "livekit.json").read_text()
    assert json.loads(written) == rendered
    assert keys.api_secret not in written
    assert keys.api_key not in written  # keys go in the environment only


@pytest.mark.unit
def test_webhooks_are_signed_with_the_servers_own_key() -> None:
    keys = LiveKitKeys("k1", "s" * 40)
    rendered = render_config(LiveKitServerConfig(keys=keys, webhook_urls=("http://127.0.0.1:9/hook",)))
    assert rendered["webhook"] == {"api_key": "k1", "urls": ["http://127.0.0.1:9/hook"]}
    assert keys.api_secret not in json.dumps(rendered)


@pytest.mark.unit
def test_server_env_carries_its_keys_and_none_of_our_livekit_settings() -> None:
    keys = LiveKitKeys("k1", "s" * 40)
    base = {"PATH": "/usr/bin", "LIVEKIT_URL": "wss://elsewhere", "LIVEKIT_API_SECRET": "other"}
    env = server_env(LiveKitServerConfig(keys=keys), base)
    assert env == {"PATH": "/usr/bin", "LIVEKIT_KEYS": f"k1: {'s' * 40}"}


@pytest.mark.unit
def test_generated_keys_differ_per_run_and_are_long_enough() -> None:
    first, second = LiveKitKeys.generate(), LiveKitKeys.generate()
    assert first != second
    assert len(first.api_secret) >= 32  # LiveKit warns about shorter secrets
    assert first.api_secret not in repr(first)


@pytest.mark.mesh
def test_the_server_listens_on_loopback_only(tmp_path: Path) -> None:
    """Run the rendered config: every socket the server opens is bound to 127.0.0.1."""
    config = LiveKitServerConfig(keys=LiveKitKeys.generate(), port=free_port())
    proc = start_server(config, tmp_path / "livekit.json", tmp_path / "livekit.log", base_env=os.environ)
    try:
        sockets = _sockets_of(proc.pid)
    finally:
        proc.stop()
    start, end = config.udp_range
    assert ("tcp", f"{LOOPBACK_HEX}:{config.port:04X}") in sockets
    assert {s for s in sockets if s[0] == "udp"} == {
        ("udp", f"{LOOPBACK_HEX}:{port:04X}") for port in range(start, end + 1)
    }
    assert all(address.startswith(LOOPBACK_HEX + ":") for _, address in sockets), sockets
    assert not [s for s in sockets if s[0].endswith("6")], sockets  # nothing on IPv6 (:: would be all)


def _sockets_of(pid: int) -> set[tuple[str, str]]:
    """(protocol, local address) of the process's sockets, from /proc (addresses in its hex form)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{protocol}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.add((protocol, fields[1]))
    return found
