"""The worker refuses to start with a clear message when its settings are wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from voice_worker.settings import VoiceWorkerSettings

pytestmark = pytest.mark.unit

BASE = {"SYNTERA_DEV_MODE": "true"}
CLOUD = {
    "LIVEKIT_URL": "wss://acme-x1y2.livekit.cloud",
    "LIVEKIT_API_KEY": "key",
    "LIVEKIT_API_SECRET": "secret-value",
}


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> VoiceWorkerSettings:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LLM_BASE_URL", "LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for key, value in {**BASE, **env}.items():
        monkeypatch.setenv(key, value)
    return VoiceWorkerSettings(_env_file=None)  # type: ignore[call-arg]


def test_defaults_are_offline_without_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, {})
    assert settings.agent_name == "syntera-voice"
    assert settings.default_mode == "offline"


def test_auto_is_cloud_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(monkeypatch, CLOUD).default_mode == "cloud"


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:7880", "wss://livekit.example.com", "wss://livekit.cloud.example"]
)
def test_auto_is_offline_with_a_self_hosted_server(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # LiveKit Inference takes LiveKit Cloud keys only; a local or self-hosted server's keys would fail.
    assert _settings(monkeypatch, {**CLOUD, "LIVEKIT_URL": url}).default_mode == "offline"


@pytest.mark.parametrize("name", ["Bad Name", "", "-starts-with-dash", "x" * 64, "UPPER"])
def test_bad_agent_name_is_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    with pytest.raises(ValidationError, match="LIVEKIT_AGENT_NAME"):
        _settings(monkeypatch, {"LIVEKIT_AGENT_NAME": name})


def test_cloud_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        _settings(monkeypatch, {"VOICE_WORKER_PROVIDERS": "cloud"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VOICE_WORKER_CLOUD_STT_MODEL": "deepgram/nova-99"}, "unknown LiveKit Inference stt model"),
        ({"VOICE_WORKER_CLOUD_LLM_MODEL": "openai/gpt-9"}, "unknown LiveKit Inference llm model"),
        ({"VOICE_WORKER_CLOUD_TTS_MODEL": "nobody/voice"}, "unknown LiveKit Inference tts model"),
    ],
)
def test_unknown_cloud_model_is_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(monkeypatch, {**CLOUD, **env})


def test_tts_model_may_name_a_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch, {**CLOUD, "VOICE_WORKER_CLOUD_TTS_MODEL": "cartesia/sonic-2:some-voice"}
    )
    assert settings.cloud_tts_model.startswith("cartesia/sonic-2")


def test_llm_base_url_needs_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="LLM_MODEL"):
        _settings(monkeypatch, {"LLM_BASE_URL": "http://127.0.0.1:9/v1"})


def test_command_line_prints_the_reason_and_fails() -> None:
    env = {"PATH": "/usr/bin:/bin", **BASE, "LIVEKIT_AGENT_NAME": "Bad Name"}
    done = subprocess.run(
        [sys.executable, "-m", "voice_worker", "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "refusing to start" in done.stderr
    assert "LIVEKIT_AGENT_NAME" in done.stderr
