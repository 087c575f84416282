"""The edge's operations config: upstream health, replicas, stats listener, request ids and tracing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from devrun.envoy_config import EdgeConfig, envoy_binary, otlp_address, render_bootstrap, write_bootstrap

pytestmark = pytest.mark.unit

OPERATIONS = EdgeConfig(
    listen_host="0.0.0.0",
    agent_address="127.0.0.1:50051,127.0.0.1:50061",
    chat_address="chat-svc:50052",
    stats_port=9902,
    otlp_endpoint="http://otel-collector:4317",
)


def _clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def _listeners(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in bootstrap["static_resources"]["listeners"]}


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_real_envoy_accepts_the_operations_config(tmp_path: Path) -> None:
    path = write_bootstrap(OPERATIONS, tmp_path / "envoy.json")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deprecated" not in output.lower()


def test_every_service_cluster_is_health_checked_over_grpc_and_ejects_only_on_local_failures() -> None:
    clusters = _clusters(render_bootstrap(OPERATIONS))
    for name in ("agent_svc", "chat_svc"):
        (check,) = clusters[name]["health_checks"]
        assert check["grpc_health_check"] == {}
        outlier = clusters[name]["outlier_detection"]
        assert outlier["split_external_local_origin_errors"] is True
        # An UNAVAILABLE answer (LiveKit down) must never eject a replica; refused connections do.
        assert outlier["enforcing_consecutive_5xx"] == 0
        assert outlier["enforcing_consecutive_gateway_failure"] == 0
        assert outlier["enforcing_consecutive_local_origin_failure"] == 100


def test_replicas_become_endpoints_of_one_cluster() -> None:
    agent = _clusters(render_bootstrap(OPERATIONS))["agent_svc"]
    endpoints = [
        e["endpoint"]["address"]["socket_address"]
        for e in agent["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert [(e["address"], e["port_value"]) for e in endpoints] == [
        ("127.0.0.1", 50051),
        ("127.0.0.1", 50061),
    ]
    assert agent["type"] == "STATIC"
    # A name (a Kubernetes headless Service) resolves to every replica.
    assert _clusters(render_bootstrap(OPERATIONS))["chat_svc"]["type"] == "STRICT_DNS"


def test_service_routes_retry_only_what_never_reached_a_service() -> None:
    hcm = _hcm(_listeners(render_bootstrap(OPERATIONS))["edge"])
    routed = [
        r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"].startswith("syntera.")
    ]
    assert routed
    for route in routed:
        retry_on = set(route["route"]["retry_policy"]["retry_on"].split(","))
        assert retry_on == {"connect-failure", "refused-stream", "reset-before-request"}


def test_request_ids_are_kept_and_returned_and_tracing_follows_the_endpoint() -> None:
    traced = _hcm(_listeners(render_bootstrap(OPERATIONS))["edge"])
    assert traced["preserve_external_request_id"] is True
    assert traced["always_set_request_id_in_response"] is True
    provider = traced["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    collector = _clusters(render_bootstrap(OPERATIONS))["otlp_collector"]
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "otel-collector", "port_value": 4317}

    untraced = render_bootstrap(EdgeConfig())
    assert "tracing" not in _hcm(_listeners(untraced)["edge"])
    assert "otlp_collector" not in _clusters(untraced)


def test_operations_listener_exposes_only_stats_and_readiness() -> None:
    bootstrap = render_bootstrap(OPERATIONS)
    listener = _listeners(bootstrap)["operations"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}
    routes = _hcm(listener)["route_config"]["virtual_hosts"][0]["routes"]
    forwarded = {r["match"].get("path") for r in routes if "route" in r}
    assert forwarded == {"/stats/prometheus", "/ready"}
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"
    assert "operations" not in _listeners(render_bootstrap(EdgeConfig()))


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("http://otel-collector:4317", "otel-collector:4317"),
        ("http://127.0.0.1:14317/", "127.0.0.1:14317"),
        ("collector:4317", "collector:4317"),
        ("http://collector", "collector:4317"),
    ],
)
def test_otlp_address(endpoint: str, address: str) -> None:
    assert otlp_address(endpoint) == address
