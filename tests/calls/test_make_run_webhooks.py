"""make run's own LiveKit server sends its webhooks to the edge; a server of one's own is left alone."""

from __future__ import annotations

import pytest

from devrun.livekit_server import render_config
from devrun.run import plan_livekit
from devrun.settings import RunSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("envoy_host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:18080/api/livekit/webhook"),
        ("0.0.0.0", "http://127.0.0.1:18080/api/livekit/webhook"),
    ],  # noqa: S104
)
def test_the_local_server_posts_webhooks_to_envoy(envoy_host: str, expected: str) -> None:
    settings = RunSettings.model_validate({"ENVOY_HOST": envoy_host, "ENVOY_PORT": 18080})
    server = plan_livekit(settings).server
    assert server is not None
    webhook = render_config(server)["webhook"]
    assert webhook == {"api_key": server.keys.api_key, "urls": [expected]}


def test_a_server_of_ones_own_is_not_configured_here() -> None:
    settings = RunSettings.model_validate(
        {
            "LIVEKIT_URL": "wss://example.livekit.cloud",
            "LIVEKIT_API_KEY": "APIx",
            "LIVEKIT_API_SECRET": "s" * 40,
        }
    )
    assert plan_livekit(settings).server is None
