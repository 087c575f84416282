"""The offline "profile responder": fixed rules that answer from the agent profile.

It is not a language model and never claims to be one: its replies say that it is a scripted
offline responder. It exists so a call works end to end with no model server and no cloud keys,
and so tests get deterministic agent turns.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from livekit.agents import llm
from livekit.agents.llm import ChatContext
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from voice_worker.models import PROFILE_RESPONDER
from voice_worker.profile import AgentProfile

_MAX_ECHO_WORDS = 30
# Said in every reply, so nobody mistakes the responder for an AI model.
_SCRIPTED = "a scripted offline responder"
_GOODBYE = re.compile(r"\b(bye|goodbye|that's all|thank you, that is all)\b", re.IGNORECASE)


class ProfileResponder:
    """Deterministic replies built from the profile and the last thing the user said."""

    def __init__(self, profile: AgentProfile) -> None:
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


def last_user_text(chat_ctx: ChatContext) -> str:
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return item.text_content or ""
    return ""


class ProfileResponderLLM(llm.LLM[Any]):
    """The profile responder behind the `llm.LLM` interface, streaming its reply word by word."""

    def __init__(self, profile: AgentProfile) -> None:
        super().__init__()
        self.responder = ProfileResponder(profile)

    @property
    def model(self) -> str:
        return PROFILE_RESPONDER

    @property
    def provider(self) -> str:
        return "offline/rules"

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _ResponderStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _ResponderStream(llm.LLMStream):
    def __init__(
        self,
        owner: ProfileResponderLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner

    async def _run(self) -> None:
        reply = self._owner.responder.reply(last_user_text(self._chat_ctx))
        chunk_id = uuid.uuid4().hex
        for index, word in enumerate(reply.split(" ")):
            piece = word if index == 0 else f" {word}"
            self._event_ch.send_nowait(
                llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )
