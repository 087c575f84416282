"""The scripted offline responder behind LiveKit's `llm.LLM` interface, streaming word by word."""

from __future__ import annotations

import uuid
from typing import Any

from livekit.agents import llm
from livekit.agents.llm import ChatContext
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from llmkit.models import PROFILE_RESPONDER
from llmkit.responder import Named, ProfileResponder


def last_user_text(chat_ctx: ChatContext) -> str:
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return item.text_content or ""
    return ""


class ProfileResponderLLM(llm.LLM[Any]):
    """Answers the last user message of the chat context with `ProfileResponder`."""

    def __init__(self, profile: Named) -> None:
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
