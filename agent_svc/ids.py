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


def room_name(conversation_id: str) -> str:
    """The LiveKit room of a conversation."""
    return f"conversation:{conversation_id}"


def agent_identity(agent_id: str) -> str:
    """The participant identity the voice agent joins with."""
    return f"agent-{agent_id}"


def dispatch_metadata(conversation_id: str, agent_id: str) -> str:
    """The JSON the voice worker reads from `ctx.job.metadata`."""
    return json.dumps({"conversationId": conversation_id, "agentId": agent_id}, separators=(",", ":"))
