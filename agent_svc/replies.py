"""Text replies and call summaries: the agent profile's language model, as text (no grpc here).

The model is chosen exactly as the voice worker chooses it for a call (`llmkit.choice`): LiveKit
Inference, an OpenAI-compatible endpoint at LLM_BASE_URL, or the scripted offline responder, and
every answer says which (`Generated`). Only services may ask (chat_svc): a reply costs model time,
and the conversation's owner is checked where the conversation lives.

Bounds: a reply or summary fails with `LLM_TIMEOUT` when the model sends nothing for
`stall_seconds`, and when the whole answer takes longer than `timeout_seconds`. The caller's
deadline is gRPC's to enforce: when it passes, the call is cancelled and the model stream with it.
Replies stop at `REPLY_MAX_CHARS`, summaries at `SUMMARY_MAX_CHARS`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from livekit.agents import llm
from pydantic import SecretStr

from agent_svc.agent_store import AgentDirectory
from agent_svc.agents import AgentProfile, ProviderMode
from llmkit.choice import (
    GeneratorKind,
    LanguageModelConfig,
    Mode,
    ModelProfile,
    ProviderChoice,
    ProviderChoiceError,
    build_llm,
    check_model,
    choose_mode,
    default_mode,
    model_name,
)
from llmkit.responder import Speaker, Turn, extract_summary
from llmkit.text import (
    SUMMARY_INSTRUCTIONS,
    TEXT_CHANNEL_NOTE,
    GenerationError,
    chat_context,
    complete_text,
    stream_text,
    transcript_text,
)
from servicekit.auth import Principal
from servicekit.errors import (
    DomainError,
    ErrorKind,
    FieldViolation,
    Violations,
    failed_precondition,
    invalid_argument,
    permission_denied,
)

log = structlog.get_logger("agent_svc.replies")

REPLY_TURNS_MAX = 100
REPLY_CHARS_MAX = 60_000
SUMMARY_TURNS_MAX = 500
SUMMARY_CHARS_MAX = 100_000
TURN_TEXT_MAX = 20_000
# A reply longer than this is cut (a text message, not an essay); a summary is a few sentences.
REPLY_MAX_CHARS = 8_000
SUMMARY_MAX_CHARS = 2_000
# What a profile without instructions is told.
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Keep answers short and plain."
# Reasons whose retry may succeed (the model or its endpoint is away or slow): UNAVAILABLE.
_UNAVAILABLE_REASONS = frozenset({"LLM_UNAVAILABLE", "LLM_TIMEOUT"})


@dataclass(frozen=True)
class TurnInput:
    """One turn as a request carries it; `speaker` is None for an unknown role."""

    speaker: Speaker | None
    text: str


@dataclass(frozen=True)
class Generated:
    """What produces the words: the kind of generator and its model name."""

    kind: GeneratorKind
    model: str


@dataclass
class ReplyStream:
    """A reply in the making: its generator (known at once) and its pieces of text."""

    generator: Generated
    pieces: AsyncIterator[str]


@dataclass(frozen=True)
class Summary:
    """A summary (`extract` False) or, from the scripted responder, an extract of the transcript."""

    text: str
    extract: bool
    generator: Generated


@dataclass(frozen=True)
class ReplyLimits:
    """Time bounds on one reply or summary (seconds)."""

    stall_seconds: float
    timeout_seconds: float


class AgentReplies:
    """Replies and summaries for agent profiles, with one cached client per language model."""

    def __init__(
        self,
        directory: AgentDirectory,
        models: LanguageModelConfig,
        default_mode: Mode,
        has_cloud_credentials: bool,
        limits: ReplyLimits,
    ) -> None:
        self._directory = directory
        self._models = models
        self._default_mode = default_mode
        self._has_cloud = has_cloud_credentials
        self._limits = limits
        # Model clients keep HTTP connections: one per (kind, model) for the process, not per reply.
        self._clients: dict[tuple[GeneratorKind, str], llm.LLM[Any]] = {}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def reply(
        self,
        principal: Principal,
        agent_id: str,
        turns: Sequence[TurnInput],
        conversation_id: str,
    ) -> ReplyStream:
        """The agent's reply to the last (user) turn; pieces raise DomainError when the model fails."""
        _services_only(principal)
        checked = _validate_turns(turns, REPLY_TURNS_MAX, REPLY_CHARS_MAX)
        if checked[-1].speaker != "user":
            raise invalid_argument([FieldViolation(f"turns[{len(turns) - 1}].role", "must be the user's")])
        profile = await self._directory.get(agent_id)
        model, generated = self._model_for(profile)
        instructions = f"{profile.instructions or DEFAULT_INSTRUCTIONS}\n\n{TEXT_CHANNEL_NOTE}"
        ctx = chat_context(instructions, checked)
        pieces = self._pieces(model, ctx, generated, conversation_id, agent_id)
        return ReplyStream(generated, pieces)

    async def summarize(
        self,
        principal: Principal,
        agent_id: str,
        turns: Sequence[TurnInput],
        conversation_id: str,
    ) -> Summary:
        """A few sentences about the transcript, or the scripted responder's honest extract."""
        _services_only(principal)
        checked = _validate_turns(turns, SUMMARY_TURNS_MAX, SUMMARY_CHARS_MAX)
        profile = await self._directory.get(agent_id)
        model, generated = self._model_for(profile)
        started = time.monotonic()
        if generated.kind is GeneratorKind.SCRIPTED_RESPONDER:
            text = extract_summary(checked)
            extract = True
        else:
            instructions = SUMMARY_INSTRUCTIONS.format(name=profile.display_name or "the agent")
            ctx = chat_context(instructions, [Turn("user", transcript_text(checked))])
            try:
                async with asyncio.timeout(self._limits.timeout_seconds):
                    text = await complete_text(
                        model, ctx, stall_seconds=self._limits.stall_seconds, max_chars=SUMMARY_MAX_CHARS
                    )
            except GenerationError as exc:
                raise _generation_failed(exc.reason, "summary", conversation_id, agent_id) from None
            except TimeoutError:
                raise _generation_failed("LLM_TIMEOUT", "summary", conversation_id, agent_id) from None
            extract = False
        log.info(
            "summary generated",
            conversation_id=conversation_id,
            agent_id=agent_id,
            generator=generated.kind.value,
            model=generated.model,
            turns=len(checked),
            chars=len(text),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return Summary(text, extract, generated)

    def _model_for(self, profile: AgentProfile) -> tuple[llm.LLM[Any], Generated]:
        wanted = ModelProfile(
            agent_id=profile.agent_id,
            display_name=profile.display_name,
            llm_model=profile.voice_settings.llm_model,
            provider_mode=_MODES[profile.voice_settings.provider_mode],
        )
        try:
            mode = choose_mode(wanted, self._default_mode, self._has_cloud)
            check_model(mode, self._models, wanted)
        except ProviderChoiceError:
            log.warning("provider choice refused", agent_id=profile.agent_id)
            raise failed_precondition(
                "the agent profile asks for a language model this deployment cannot run", "PROVIDER_CHOICE"
            ) from None
        kind, name = model_name(mode, self._models, wanted)
        generated = Generated(kind, name)
        if kind is GeneratorKind.SCRIPTED_RESPONDER:
            # Built per profile (it speaks with the profile's name); it holds no connections.
            return build_llm(mode, self._models, wanted, profile).llm, generated
        client = self._clients.get((kind, name))
        if client is None:
            client = build_llm(mode, self._models, wanted, profile).llm
            self._clients[(kind, name)] = client
        return client, generated

    async def _pieces(
        self,
        model: llm.LLM[Any],
        ctx: llm.ChatContext,
        generated: Generated,
        conversation_id: str,
        agent_id: str,
    ) -> AsyncIterator[str]:
        started = time.monotonic()
        first: float | None = None
        chars = 0
        outcome = "failed"
        try:
            async with asyncio.timeout(self._limits.timeout_seconds):
                pieces = stream_text(
                    model, ctx, stall_seconds=self._limits.stall_seconds, max_chars=REPLY_MAX_CHARS
                )
                async for piece in pieces:
                    if first is None:
                        first = time.monotonic()
                    chars += len(piece)
                    yield piece
            outcome = "complete"
        except GenerationError as exc:
            outcome = exc.reason
            raise _generation_failed(exc.reason, "reply", conversation_id, agent_id) from None
        except TimeoutError:
            outcome = "LLM_TIMEOUT"
            raise _generation_failed("LLM_TIMEOUT", "reply", conversation_id, agent_id) from None
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the caller went away (a newer message, its deadline)
            raise
        finally:
            log.info(
                "reply generated",
                conversation_id=conversation_id,
                agent_id=agent_id,
                generator=generated.kind.value,
                model=generated.model,
                outcome=outcome,
                chars=chars,
                first_piece_ms=None if first is None else round((first - started) * 1000, 1),
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )


_MODES: dict[ProviderMode, Literal["", "cloud", "offline"]] = {
    ProviderMode.UNSPECIFIED: "",
    ProviderMode.CLOUD: "cloud",
    ProviderMode.OFFLINE: "offline",
}


def _services_only(principal: Principal) -> None:
    if not principal.is_service:
        raise permission_denied("only services may ask for replies and summaries", "SERVICE_ONLY")


def _validate_turns(turns: Sequence[TurnInput], max_turns: int, max_chars: int) -> list[Turn]:
    violations = Violations()
    if not 1 <= len(turns) <= max_turns:
        violations.add("turns", f"must hold 1 to {max_turns} turns")
    total = 0
    checked: list[Turn] = []
    for index, turn in enumerate(turns[:max_turns]):
        if turn.speaker is None:
            violations.add(f"turns[{index}].role", "must be TURN_ROLE_USER or TURN_ROLE_AGENT")
        if not turn.text.strip():
            violations.add(f"turns[{index}].text", "must contain a visible character")
        elif len(turn.text) > TURN_TEXT_MAX:
            violations.add(f"turns[{index}].text", f"must be at most {TURN_TEXT_MAX} characters")
        total += len(turn.text)
        if turn.speaker is not None:
            checked.append(Turn(turn.speaker, turn.text))
    if total > max_chars:
        violations.add("turns", f"must hold at most {max_chars} characters in all")
    violations.raise_if_any()
    return checked


def _generation_failed(reason: str, what: str, conversation_id: str, agent_id: str) -> DomainError:
    log.warning(
        "generation failed", what=what, reason=reason, conversation_id=conversation_id, agent_id=agent_id
    )
    if reason in _UNAVAILABLE_REASONS:
        return DomainError(
            ErrorKind.UNAVAILABLE, reason, "the language model did not answer in time; try again"
        )
    return DomainError(ErrorKind.FAILED_PRECONDITION, reason, "the language model gave no usable answer")


class _RepliesSettings(Protocol):
    """What `build_replies` reads of `AgentSettings`."""

    livekit_url: str
    livekit_api_key: str
    livekit_api_secret: SecretStr
    providers: ProviderChoice
    reply_stall_seconds: float
    reply_timeout_seconds: float

    def language_models(self, livekit_api_key: str, livekit_api_secret: SecretStr) -> LanguageModelConfig: ...


def build_replies(
    settings: _RepliesSettings, directory: AgentDirectory, closers: list[Callable[[], Awaitable[None]]]
) -> AgentReplies:
    """`AgentReplies` from the settings, its model clients closed with the server's other clients.

    The model plugins are imported here, at start-up on the main thread, as LiveKit requires (and
    so the first reply does not pay for the import).
    """
    from livekit.plugins import openai  # noqa: F401 - imported for its registration

    has_credentials = bool(settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret)
    mode = default_mode(settings.providers, settings.livekit_url, has_credentials)
    models = settings.language_models(settings.livekit_api_key, settings.livekit_api_secret)
    replies = AgentReplies(
        directory,
        models,
        mode,
        has_credentials,
        ReplyLimits(
            stall_seconds=settings.reply_stall_seconds, timeout_seconds=settings.reply_timeout_seconds
        ),
    )
    closers.append(replies.aclose)
    log.info(
        "language models",
        default_mode=mode,
        cloud_model=models.cloud_model,
        endpoint_model=models.model if models.base_url else None,
    )
    return replies
