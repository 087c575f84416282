"""The rendered Envoy bootstrap: accepted by the real Envoy binary, and shaped as the edge needs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from devrun.envoy_config import (
    CONVERSATION_SERVICE,
    EdgeConfig,
    envoy_binary,
    parse_origins,
    render_bootstrap,
    split_address,
    write_bootstrap,
)

pytestmark = pytest.mark.unit


def _validate(config: EdgeConfig, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = write_bootstrap(config, tmp_path / "envoy.json")
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def _filter(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f["typed_config"] for f in _hcm(bootstrap)["http_filters"] if f["name"] == name]
    typed: dict[str, Any] = found
    return typed


def _routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


@pytest.mark.parametrize(
    "config",
    [
        EdgeConfig(),
        EdgeConfig(chat_address=None),
        EdgeConfig(agent_address="agent:50051", chat_address="chat:50052", listen_host="0.0.0.0"),
        EdgeConfig(cors_allowed_origins=("*",)),
    ],
    ids=["defaults", "without-chat", "dns-names", "any-origin"],
)
def test_real_envoy_accepts_the_rendered_config(config: EdgeConfig, tmp_path: Path) -> None:
    result = _validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
    assert "deprecated" not in (result.stdout + result.stderr).lower()


def test_real_envoy_rejects_a_missing_descriptor(tmp_path: Path) -> None:
    result = _validate(EdgeConfig(descriptor_path=tmp_path / "missing.pb"), tmp_path)
    assert result.returncode != 0


def test_internal_method_is_blocked_before_the_service_route() -> None:
    routes = _routes(render_bootstrap(EdgeConfig()))
    names = [r["name"] for r in routes]
    blocked = names.index(f"blocked:/{CONVERSATION_SERVICE}/ReportTranscript")
    assert blocked < names.index(CONVERSATION_SERVICE)
    assert routes[blocked]["direct_response"]["status"] == 404
    assert routes[blocked]["match"] == {
        "path": f"/{CONVERSATION_SERVICE}/ReportTranscript",
        "case_sensitive": False,
    }


def test_services_route_to_their_clusters_without_deadline() -> None:
    routes = {r["name"]: r for r in _routes(render_bootstrap(EdgeConfig()))}
    assert routes["syntera.livekit.v1.LiveKitService"]["route"]["cluster"] == "agent_svc"
    assert routes["syntera.agent.v1.AgentService"]["route"]["cluster"] == "agent_svc"
    assert routes[CONVERSATION_SERVICE]["route"]["cluster"] == "chat_svc"
    assert routes[CONVERSATION_SERVICE]["route"]["timeout"] == "0s"


def test_without_chat_conversations_are_neither_routed_nor_transcoded() -> None:
    bootstrap = render_bootstrap(EdgeConfig(chat_address=None))
    assert CONVERSATION_SERVICE not in [r["name"] for r in _routes(bootstrap)]
    clusters = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert clusters == ["agent_svc"]
    assert (
        CONVERSATION_SERVICE not in _filter(bootstrap, "envoy.filters.http.grpc_json_transcoder")["services"]
    )


def test_transcoder_options() -> None:
    bootstrap = render_bootstrap(EdgeConfig())
    assert [f["name"] for f in _hcm(bootstrap)["http_filters"]] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.buffer",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]
    transcoder = _filter(bootstrap, "envoy.filters.http.grpc_json_transcoder")
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["auto_mapping"] is False
    assert transcoder["print_options"]["stream_newline_delimited"] is True
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True
    assert transcoder["request_validation_options"]["reject_unknown_query_parameters"] is True


def test_admin_listens_on_loopback_only() -> None:
    bootstrap = render_bootstrap(EdgeConfig(listen_host="0.0.0.0", admin_port=19901))
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}


def test_cors_origins_are_exact_unless_any() -> None:
    def matchers(config: EdgeConfig) -> list[dict[str, Any]]:
        vhost = _hcm(render_bootstrap(config))["route_config"]["virtual_hosts"][0]
        policy = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
        assert "authorization" in policy["allow_headers"]
        assert "grpc-status-details-bin" in policy["expose_headers"]
        result: list[dict[str, Any]] = policy["allow_origin_string_match"]
        return result

    assert matchers(EdgeConfig(cors_allowed_origins=("https://a.example", "http://b:3000"))) == [
        {"exact": "https://a.example"},
        {"exact": "http://b:3000"},
    ]
    assert matchers(EdgeConfig(cors_allowed_origins=("*",))) == [{"safe_regex": {"regex": ".*"}}]


def test_parse_origins() -> None:
    assert parse_origins(" https://a.example/ , ,http://b:3000") == ("https://a.example", "http://b:3000")
    assert parse_origins("") == ()


def test_split_address() -> None:
    assert split_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_address("[::1]:8080") == ("::1", 8080)
    assert split_address("chat:50052") == ("chat", 50052)
    for bad in ("50051", "host:", ":50051", "host:0", "host:70000", "host:abc"):
        with pytest.raises(ValueError, match="host:port"):
            split_address(bad)


def test_cluster_kind_follows_the_address() -> None:
    bootstrap = render_bootstrap(EdgeConfig(agent_address="127.0.0.1:1", chat_address="chat:2"))
    kinds = {c["name"]: c["type"] for c in bootstrap["static_resources"]["clusters"]}
    assert kinds == {"agent_svc": "STATIC", "chat_svc": "STRICT_DNS"}


def test_bootstrap_file_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.json"):
        write_bootstrap(EdgeConfig(), tmp_path / "envoy.yaml")


def test_edge_replies_are_json_for_rest_clients_and_untrusted_headers_dropped() -> None:
    hcm = _hcm(render_bootstrap(EdgeConfig()))
    assert hcm["use_remote_address"] is True
    # Those that answer REST clients; the others give gRPC clients a trailers-only status.
    mappers = [
        m
        for m in hcm["local_reply_config"]["mappers"]
        if m["body_format_override"]["content_type"] == "application/json"
    ]
    codes = {
        m["filter"]["and_filter"]["filters"][0]["status_code_filter"]["comparison"]["value"][
            "default_value"
        ]: m["body_format_override"]["json_format"]["code"]
        for m in mappers
    }
    assert codes[503] == 14
    assert codes[404] == 5
    assert codes[400] == 3
    assert all(m["body_format_override"]["content_type"] == "application/json" for m in mappers)
