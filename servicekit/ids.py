"""Identifiers and names every part of the mesh must agree on.

Ids (conversations, agents, users) share one rule. A conversation's LiveKit room is named after it,
and the voice worker learns its call from the JSON metadata of LiveKit's agent dispatch: agent_svc
writes both, the worker reads both, so they live here rather than in either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeGuard

from servicekit.errors import Violations

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ID_RULE = "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
# The built-in agent profile agent_svc creates at start-up; used when a call names none.
DEFAULT_AGENT_ID = "default"
ROOM_PREFIX = "conversation:"


def is_id(value: object) -> TypeGuard[str]:
    """True for a string that is a well-formed id."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(violations: Violations, field_path: str, value: str, *, required: bool = True) -> None:
    """Adds a violation unless `value` is a well-formed id (or empty and not required)."""
    if not value:
        if required:
            violations.add(field_path, "is required")
        return
    if not is_id(value):
        violations.add(field_path, ID_RULE)


def room_name(conversation_id: str) -> str:
    """The LiveKit room of a conversation."""
    return f"{ROOM_PREFIX}{conversation_id}"


def conversation_of_room(name: str) -> str | None:
    """The conversation whose room `name` is, or None for any other room."""
    if not name.startswith(ROOM_PREFIX):
        return None
    conversation_id = name[len(ROOM_PREFIX) :]
    return conversation_id if is_id(conversation_id) else None


def agent_identity(agent_id: str) -> str:
    """The participant identity the voice agent joins with."""
    return f"agent-{agent_id}"


@dataclass(frozen=True)
class Dispatch:
    """What a dispatch's metadata says; an id is empty when the metadata has none that is well-formed."""

    conversation_id: str
    agent_id: str
    resume: bool = False


def dispatch_metadata(conversation_id: str, agent_id: str, *, resume: bool = False) -> str:
    """The JSON the voice worker reads from `ctx.job.metadata`.

    `resume` marks a dispatch that replaces an agent which left its call: the worker then greets
    with "I'm back" and carries on with the conversation so far.
    """
    data: dict[str, object] = {"conversationId": conversation_id, "agentId": agent_id}
    if resume:
        data["resume"] = True
    return json.dumps(data, separators=(",", ":"))


def read_dispatch(metadata: str) -> Dispatch:
    """The dispatch `metadata` describes; anything that is not our JSON reads as naming nothing."""
    try:
        data = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    conversation_id, agent_id = data.get("conversationId"), data.get("agentId")
    return Dispatch(
        conversation_id=conversation_id if is_id(conversation_id) else "",
        agent_id=agent_id if is_id(agent_id) else "",
        resume=data.get("resume") is True,
    )


def agent_of_dispatch(metadata: str) -> str:
    """The agent profile named in dispatch metadata; empty when it names none."""
    return read_dispatch(metadata).agent_id
