"""Agent profiles: the domain model, field rules and update masks (no grpc, no storage)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import re
from dataclasses import dataclass, field

from servicekit.errors import Violations
from servicekit.ids import DEFAULT_AGENT_ID, ID_RULE, is_id

MAX_DISPLAY_NAME = 100
MAX_INSTRUCTIONS = 20_000
MAX_GREETING = 1_000
MAX_MODEL_NAME = 128
MIN_SPEAKING_RATE = 0.5
MAX_SPEAKING_RATE = 2.0

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$")
_VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+ -]*$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


class ProviderMode(enum.Enum):
    UNSPECIFIED = "unspecified"
    CLOUD = "cloud"
    OFFLINE = "offline"


@dataclass(frozen=True)
class VoiceSettings:
    voice: str = ""
    language: str = ""
    speaking_rate: float = 0.0
    stt_model: str = ""
    llm_model: str = ""
    tts_model: str = ""
    provider_mode: ProviderMode = ProviderMode.UNSPECIFIED


@dataclass(frozen=True)
class AgentProfile:
    """An agent profile. `agent_id`, `owner_id` and the times are set by the service."""

    display_name: str
    instructions: str = ""
    greeting: str = ""
    voice_settings: VoiceSettings = field(default_factory=VoiceSettings)
    agent_id: str = ""
    owner_id: str = ""
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None


# The built-in profile every conversation can use; seeded at start-up without overwriting edits.
DEFAULT_PROFILE = AgentProfile(
    agent_id=DEFAULT_AGENT_ID,
    display_name="Syntera Assistant",
    instructions=(
        "You are Syntera, a friendly and concise voice assistant. Answer in short spoken sentences, "
        "ask a clarifying question when a request is ambiguous, and never read out markup or links."
    ),
    greeting="Hello! How can I help you today?",
    voice_settings=VoiceSettings(language="en-US", speaking_rate=1.0),
)

VOICE_FIELDS = tuple(f.name for f in dataclasses.fields(VoiceSettings))
# Paths UpdateAgent may name: top-level editable fields and any single voice setting.
UPDATABLE_PATHS = frozenset(
    {"display_name", "instructions", "greeting", "voice_settings"}
    | {f"voice_settings.{n}" for n in VOICE_FIELDS}
)


def validate_profile(violations: Violations, profile: AgentProfile, prefix: str = "agent") -> None:
    """Adds a violation, named by its request path, for every bad field of `profile`."""
    check_display_name(violations, f"{prefix}.display_name", profile.display_name)
    _check_text(violations, f"{prefix}.instructions", profile.instructions, MAX_INSTRUCTIONS)
    _check_text(violations, f"{prefix}.greeting", profile.greeting, MAX_GREETING)
    validate_voice(violations, profile.voice_settings, f"{prefix}.voice_settings")


def check_display_name(violations: Violations, path: str, value: str) -> None:
    if not value.strip():
        violations.add(path, "is required")
    elif len(value) > MAX_DISPLAY_NAME or not value.isprintable():
        violations.add(path, f"must be 1 to {MAX_DISPLAY_NAME} printable characters")


def validate_voice(violations: Violations, voice: VoiceSettings, prefix: str) -> None:
    if voice.voice and (len(voice.voice) > MAX_MODEL_NAME or not _VOICE_NAME.fullmatch(voice.voice)):
        violations.add(
            f"{prefix}.voice", "must be a voice name of letters, digits and _ . : / @ + - or space"
        )
    if voice.language and (len(voice.language) > 35 or not _LANGUAGE.fullmatch(voice.language)):
        violations.add(f"{prefix}.language", "must be a BCP-47 language tag such as en-US")
    rate = voice.speaking_rate
    if not math.isfinite(rate) or (rate != 0 and not MIN_SPEAKING_RATE <= rate <= MAX_SPEAKING_RATE):
        violations.add(
            f"{prefix}.speaking_rate", f"must be between {MIN_SPEAKING_RATE} and {MAX_SPEAKING_RATE} (or 0)"
        )
    for name in ("stt_model", "llm_model", "tts_model"):
        value: str = getattr(voice, name)
        if value and (len(value) > MAX_MODEL_NAME or not _MODEL_NAME.fullmatch(value)):
            violations.add(
                f"{prefix}.{name}",
                f"must be at most {MAX_MODEL_NAME} characters of letters, digits and _ . : / @ + -",
            )


def check_request_id(violations: Violations, request_id: str) -> None:
    # Stricter than chat_svc's request ids (any printable characters): CreateAgent takes ids only.
    if request_id and not is_id(request_id):
        violations.add("request_id", ID_RULE)


def check_update_mask(violations: Violations, paths: list[str]) -> None:
    """The mask must name at least one field, and only fields UpdateAgent may change."""
    if not paths:
        violations.add("update_mask", "must name at least one field")
        return
    unknown = [p for p in paths if p not in UPDATABLE_PATHS]
    if unknown:
        violations.add(
            "update_mask",
            f"unknown or read-only paths {sorted(unknown)}; allowed: {', '.join(sorted(UPDATABLE_PATHS))}",
        )


def apply_update(current: AgentProfile, change: AgentProfile, paths: list[str]) -> AgentProfile:
    """`current` with the fields named in `paths` taken from `change`."""
    top: dict[str, object] = {}
    voice: dict[str, object] = {}
    for path in paths:
        if path == "voice_settings":
            top["voice_settings"] = change.voice_settings
        elif path.startswith("voice_settings."):
            name = path.removeprefix("voice_settings.")
            voice[name] = getattr(change.voice_settings, name)
        else:
            top[path] = getattr(change, path)
    updated = dataclasses.replace(current, **top)  # type: ignore[arg-type]
    if voice:
        updated = dataclasses.replace(
            updated,
            voice_settings=dataclasses.replace(updated.voice_settings, **voice),  # type: ignore[arg-type]
        )
    return updated


def _check_text(violations: Violations, path: str, value: str, limit: int) -> None:
    if len(value) > limit:
        violations.add(path, f"must be at most {limit} characters")
    elif "\x00" in value:
        violations.add(path, "must not contain NUL characters")
