"""An agent's reply, or a summary, as text streamed from any `llm.LLM`.

Failures come out as `GenerationError` with an UPPER_SNAKE reason, whatever the provider:

- `LLM_TIMEOUT`: no piece of text arrived within the stall bound (or the provider timed out).
- `LLM_UNAVAILABLE`: the provider could not be reached, or answered 429 / 5xx.
- `LLM_FAILED`: the provider refused the request (another 4xx) or broke the stream.
- `LLM_EMPTY_REPLY`: it finished without a word.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from livekit.agents import APIConnectionError, APIStatusError, APITimeoutError, llm
from livekit.agents.types import APIConnectOptions

from llmkit.responder import Turn

# Retry once, quickly, when nothing was received yet (LiveKit never retries after the first piece).
_MAX_RETRY = 1
_RETRY_INTERVAL_SECONDS = 0.5

SUMMARY_INSTRUCTIONS = (
    "You summarize a call between a user and {name}, an AI agent. Write at most three short "
    "sentences in plain text: what the user wanted and what was answered or agreed. Use only what "
    "the transcript says; if it says little, say so. Do not add greetings, lists or markup."
)
TEXT_CHANNEL_NOTE = (
    "This conversation is typed, not spoken: answer in short plain text, without markup or links."
)


class GenerationError(Exception):
    """The model produced no complete answer; `reason` says why (see the module docstring)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def chat_context(instructions: str, turns: Sequence[Turn]) -> llm.ChatContext:
    ctx = llm.ChatContext()
    if instructions:
        ctx.add_message(role="system", content=instructions)
    for turn in turns:
        ctx.add_message(role="user" if turn.speaker == "user" else "assistant", content=turn.text)
    return ctx


async def stream_text(
    model: llm.LLM[Any], ctx: llm.ChatContext, *, stall_seconds: float, max_chars: int
) -> AsyncIterator[str]:
    """The model's answer in pieces as they arrive, at most `max_chars` characters in all.

    Raises GenerationError when no piece arrives for `stall_seconds`, or the provider fails.
    """
    options = APIConnectOptions(
        max_retry=_MAX_RETRY, retry_interval=_RETRY_INTERVAL_SECONDS, timeout=stall_seconds
    )
    sent = 0
    async with model.chat(chat_ctx=ctx, conn_options=options) as stream:
        pieces = stream.__aiter__()
        while sent < max_chars:
            try:
                chunk = await asyncio.wait_for(anext(pieces), stall_seconds)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise GenerationError("LLM_TIMEOUT") from None
            except APITimeoutError:
                raise GenerationError("LLM_TIMEOUT") from None
            except APIStatusError as exc:
                status = exc.status_code
                reason = "LLM_UNAVAILABLE" if status == 429 or status >= 500 else "LLM_FAILED"
                raise GenerationError(reason) from None
            except APIConnectionError:
                raise GenerationError("LLM_UNAVAILABLE") from None
            piece = chunk.delta.content if chunk.delta is not None else None
            if piece:
                piece = piece[: max_chars - sent]
                sent += len(piece)
                yield piece
    if sent == 0:
        raise GenerationError("LLM_EMPTY_REPLY")


async def complete_text(
    model: llm.LLM[Any], ctx: llm.ChatContext, *, stall_seconds: float, max_chars: int
) -> str:
    """The whole answer (see `stream_text`), stripped."""
    parts = [
        piece async for piece in stream_text(model, ctx, stall_seconds=stall_seconds, max_chars=max_chars)
    ]
    text = "".join(parts).strip()
    if not text:
        raise GenerationError("LLM_EMPTY_REPLY")
    return text


def transcript_text(turns: Sequence[Turn]) -> str:
    """A transcript as the summarizing model reads it: one `User:` / `Agent:` line per turn."""
    return "\n".join(
        f"{'User' if t.speaker == 'user' else 'Agent'}: {' '.join(t.text.split())}" for t in turns
    )
