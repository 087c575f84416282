"""Which model names the language-model families accept.

Cloud names come from the LiveKit Inference type definitions of the pinned livekit-agents, so a
typo is refused at start-up instead of failing the first call.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Literal

ModelKind = Literal["stt", "llm", "tts"]

# Not a language model: a fixed-rule responder built from the agent profile.
PROFILE_RESPONDER = "profile-responder"


def _literal_values(tp: object) -> list[str]:
    values: list[str] = []
    for arg in typing.get_args(tp):
        if isinstance(arg, str):
            values.append(arg)
        else:
            values.extend(_literal_values(arg))
    return values


@cache
def cloud_models(kind: ModelKind) -> frozenset[str]:
    """The LiveKit Inference model names of `kind` known to the pinned livekit-agents."""
    from livekit.agents.inference import llm, stt, tts

    source = {"stt": stt.STTModels, "llm": llm.LLMModels, "tts": tts.TTSModels}[kind]
    return frozenset(_literal_values(source))


def check_cloud_model(kind: ModelKind, name: str) -> str:
    """Returns why `name` is not a usable cloud model of `kind`, or "" when it is.

    A TTS name may carry a voice after a colon (`cartesia/sonic-2:<voice id>`).
    """
    base = name.split(":", 1)[0] if kind == "tts" else name
    known = cloud_models(kind)
    if base in known:
        return ""
    examples = ", ".join(sorted(known)[:5])
    return f"unknown LiveKit Inference {kind} model {name!r} (known ones include {examples})"


def check_offline_llm(name: str, endpoint_model: str = "") -> str:
    """Returns why `name` is not a usable offline language model, or "" when it is.

    Args:
        name: The model a profile asks for; empty means the default.
        endpoint_model: The model served at LLM_BASE_URL (empty when none is configured).
    """
    if not name:
        return ""
    allowed = {PROFILE_RESPONDER, *([endpoint_model] if endpoint_model else [])}
    if name in allowed:
        return ""
    return f"unknown offline llm model {name!r} (offline choices: {', '.join(sorted(allowed))})"
