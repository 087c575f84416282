""".env.example documents every variable any settings class reads, and nothing that none reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from agent_svc.settings import AgentSettings
from chat_svc.settings import ChatSettings
from devrun.settings import RunSettings
from devrun.webpage import WebSettings
from servicekit.settings import CommonSettings
from voice_worker.settings import VoiceWorkerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: list[type[BaseSettings]] = [
    CommonSettings,
    AgentSettings,
    ChatSettings,
    VoiceWorkerSettings,
    RunSettings,
    WebSettings,
]


def _variables(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else (prefix + name).upper())
    return names


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    # Both `NAME=value` and commented-out `# NAME=value` lines document a variable.
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_every_variable_read_is_documented() -> None:
    read = set().union(*(_variables(cls) for cls in SETTINGS))
    assert read - _documented() == set()


def test_nothing_documented_is_unread() -> None:
    read = set().union(*(_variables(cls) for cls in SETTINGS))
    assert _documented() - read == set()
