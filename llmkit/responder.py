"""The scripted offline responder: fixed rules that answer from the agent profile.

It is not a language model and never claims to be one: its replies say that it is a scripted
offline responder, and its summaries are extracts of what was said, labelled as such. It exists so
calls and text conversations work end to end with no model server and no cloud keys, and so tests
get deterministic agent turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

_MAX_ECHO_WORDS = 30
# Said in every reply, so nobody mistakes the responder for an AI model.
_SCRIPTED = "a scripted offline responder"
_GOODBYE = re.compile(r"\b(bye|goodbye|that's all|thank you, that is all)\b", re.IGNORECASE)
# An extract quotes at most this many user turns, each cut to this many characters.
_EXTRACT_QUOTES = 3
_EXTRACT_QUOTE_CHARS = 160

Speaker = Literal["user", "agent"]


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation as a language model is given it."""

    speaker: Speaker
    text: str


class Named(Protocol):
    """Anything with the agent's display name (the worker's or agent_svc's profile)."""

    @property
    def display_name(self) -> str: ...


class ProfileResponder:
    """Deterministic replies built from the profile and the last thing the user said."""

    def __init__(self, profile: Named) -> None:
        self._name = profile.display_name or "your assistant"

    def reply(self, user_text: str) -> str:
        text = " ".join(user_text.split())
        if not text:
            return "Sorry, I did not catch that. Could you say it again?"
        words = text.split()
        echo = " ".join(words[:_MAX_ECHO_WORDS]).rstrip(".?!")
        if _GOODBYE.search(text):
            return f"Thank you for calling. This is {self._name}, goodbye."
        if text.endswith("?"):
            return f"You asked: {echo}? This is {self._name}, {_SCRIPTED}; your question is saved."
        return f"I heard you say: {echo}. This is {self._name}, {_SCRIPTED}; your words are saved."


def extract_summary(turns: Sequence[Turn]) -> str:
    """An honest extract of a transcript: the user's first words quoted, and how much was said.

    Nothing is paraphrased or invented; the text says it is an extract, not a summary.
    """
    users = [" ".join(t.text.split()) for t in turns if t.speaker == "user" and t.text.strip()]
    agents = sum(1 for t in turns if t.speaker == "agent" and t.text.strip())
    if not users and not agents:
        return ""
    quotes = [_clip(text) for text in users[:_EXTRACT_QUOTES]]
    parts = ["Extract of the call, not a summary (scripted offline responder, no language model)."]
    if quotes:
        parts.append("The user said: " + " / ".join(f'"{q}"' for q in quotes) + ".")
    more = len(users) - len(quotes)
    parts.append(
        f"{len(users)} user turn{'s' if len(users) != 1 else ''}"
        + (f" ({more} not quoted)" if more else "")
        + f", {agents} agent turn{'s' if agents != 1 else ''}."
    )
    return " ".join(parts)


def _clip(text: str) -> str:
    if len(text) <= _EXTRACT_QUOTE_CHARS:
        return text
    return text[: _EXTRACT_QUOTE_CHARS - 1].rstrip() + "…"
