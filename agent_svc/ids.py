"""Identifiers and names shared by the mesh (see the agreed conventions in DESIGN.md)."""

from __future__ import annotations

import json
import re

from servicekit.errors import Violations

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ID_RULE = "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
DEFAULT_AGENT_ID = "default"


def check_id(violations: Violations, field_path: str, value: str, *, required: bool = True) -> None:
    """Adds a violation unless `value` is a well-formed id (or empty and not required)."""
    if not value:
        if required:
            violations.add(field_path, "is required")
        return
    if not ID_PATTERN.fullmatch(value):
        violations.add(field_path, ID_RULE)


ROOM_PREFIX = "conversation:"


def room_name(conversation_id: str) -> str:
    """The LiveKit room of a conversation."""
    return f"{ROOM_PREFIX}{conversation_id}"


def conversation_of_room(name: str) -> str | None:
    """The conversation whose room `name` is, or None for any other room."""
    if not name.startswith(ROOM_PREFIX):
        return None
    conversation_id = name[len(ROOM_PREFIX) :]
    return conversation_id if ID_PATTERN.fullmatch(conversation_id) else None


def agent_identity(agent_id: str) -> str:
    """The participant identity the voice agent joins with."""
    return f"agent-{agent_id}"


def dispatch_metadata(conversation_id: str, agent_id: str, *, resume: bool = False) -> str:
    """The JSON the voice worker reads from `ctx.job.metadata`.

    `resume` marks a dispatch that replaces an agent which left its call: the worker then greets
    with "I'm back" and carries on with the conversation so far.
    """
    data: dict[str, object] = {"conversationId": conversation_id, "agentId": agent_id}
    if resume:
        data["resume"] = True
    return json.dumps(data, separators=(",", ":"))


def agent_of_dispatch(metadata: str) -> str:
    """The agent profile named in dispatch metadata; empty when it names none."""
    try:
        data = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        return ""
    agent_id = data.get("agentId") if isinstance(data, dict) else None
    return agent_id if isinstance(agent_id, str) and ID_PATTERN.fullmatch(agent_id) else ""
