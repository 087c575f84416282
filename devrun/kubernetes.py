"""The edge config of the Kubernetes deployment (deploy/k8s), rendered by the same code as `make run`'s.

`python -m devrun envoy-config --kubernetes --out deploy/k8s/base/envoy/envoy.json` writes it; the
kustomize base turns that file into the `envoy-config` ConfigMap, and a test checks that the
committed file is exactly what this module renders. Nothing here reads the environment: the
deployment's file must not depend on a developer's `.env`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from devrun.edge_limits import EdgeLimits
from devrun.envoy_config import EdgeConfig

# Where the descriptor set lives in the image (the Containerfile copies envoy/syntera.pb there).
IMAGE_DESCRIPTOR = Path("/app/envoy/syntera.pb")
# The base's Services (headless, so Envoy's STRICT_DNS clusters see every replica).
AGENT_SVC = "agent-svc:50051"
CHAT_SVC = "chat-svc:50052"
# An OpenTelemetry Collector Service in the same namespace; spans are dropped while there is none.
OTLP_ENDPOINT = "http://otel-collector:4317"
# A placeholder: deployments render their own with `--origins` (see docs/production.md).
DEFAULT_ORIGINS = ("https://call.example.com",)
EDGE_PORT = 8080
ADMIN_PORT = 9901
OPERATIONS_PORT = 9902
BASE_CONFIG_FILE = Path("deploy/k8s/base/envoy/envoy.json")


def kubernetes_edge(origins: Sequence[str] = DEFAULT_ORIGINS) -> EdgeConfig:
    """The edge as the Kubernetes base runs it: every interface, upstreams by Service name."""
    return EdgeConfig(
        listen_host="0.0.0.0",  # noqa: S104 - inside a pod; the Service decides who reaches it
        listen_port=EDGE_PORT,
        admin_port=ADMIN_PORT,
        agent_address=AGENT_SVC,
        chat_address=CHAT_SVC,
        descriptor_path=IMAGE_DESCRIPTOR,
        cors_allowed_origins=tuple(origins),
        stats_port=OPERATIONS_PORT,
        otlp_endpoint=OTLP_ENDPOINT,
        # TLS ends at an ingress or load balancer in front of the ClusterIP Service: its
        # x-forwarded-for names the client, whose address keys the rate limit.
        limits=EdgeLimits(trusted_proxy_hops=1),
    )
