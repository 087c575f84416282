"""LiveKitService's rules: who may get which token and act on which room, and room idempotency."""

from __future__ import annotations

import asyncio
import enum
import weakref
from dataclasses import dataclass
from typing import Protocol

import structlog

from agent_svc.livekit_gateway import LiveKitGateway, RoomInfo, RoomNotFoundError
from agent_svc.model import (
    AgentDispatched,
    CallMedia,
    MintedToken,
    ParticipantKind,
    ParticipantView,
    RoomCreated,
    RoomDeleted,
)
from agent_svc.ownership import ConversationAccess, ConversationFacts
from agent_svc.tokens import MAX_DISPLAY_NAME, TokenMinter, TokenSpec
from servicekit import context, ids
from servicekit.auth import Principal
from servicekit.errors import (
    FieldViolation,
    Violations,
    failed_precondition,
    invalid_argument,
    not_found,
    permission_denied,
)

log = structlog.get_logger("agent_svc.livekit")


class Unrecognised(enum.Enum):
    """A request's enum value this service does not know (a client built on newer protos sent it)."""

    VALUE = "unrecognised"


UNRECOGNISED = Unrecognised.VALUE


@dataclass(frozen=True)
class TokenRequest:
    """A GenerateToken request in domain terms (None = not given), not yet validated."""

    conversation_id: str
    user_id: str
    agent_id: str
    kind: ParticipantKind | Unrecognised | None
    media: CallMedia | Unrecognised | None
    ttl_seconds: float | None
    display_name: str


@dataclass(frozen=True)
class Caller:
    """The authenticated caller and its raw bearer token (forwarded to chat_svc for ownership)."""

    principal: Principal
    bearer_token: str


class CallGate(Protocol):
    """What LiveKitAccess needs of the call records: admission under the quota, hang-ups."""

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        """Returns if the call may start (or is live already); RESOURCE_EXHAUSTED otherwise."""
        ...

    async def hung_up(self, conversation_id: str, room_sid: str) -> None:
        """Records that the room is being deleted because the conversation ended."""
        ...


class LiveKitAccess:
    """The LiveKitService use cases.

    Args:
        minter: Signs tokens.
        gateway: The LiveKit server API.
        conversations: Ownership checks for user callers.
        calls: Admission of calls under the quota, and the record of hang-ups.
    """

    def __init__(
        self,
        minter: TokenMinter,
        gateway: LiveKitGateway,
        conversations: ConversationAccess,
        calls: CallGate,
    ) -> None:
        self._minter = minter
        self._gateway = gateway
        self._conversations = conversations
        self._calls = calls
        # Serialises room set-up per room in this process, so concurrent CreateRoom/DispatchAgent
        # calls do not both dispatch the agent.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def generate_token(self, caller: Caller, request: TokenRequest) -> MintedToken:
        violations = Violations()
        ids.check_id(violations, "conversation_id", request.conversation_id)
        ids.check_id(violations, "agent_id", request.agent_id)
        ids.check_id(violations, "user_id", request.user_id, required=False)
        self._minter.check_ttl(violations, "ttl", request.ttl_seconds)
        if len(request.display_name) > MAX_DISPLAY_NAME or not request.display_name.isprintable():
            violations.add("display_name", f"must be at most {MAX_DISPLAY_NAME} printable characters")
        if request.kind is UNRECOGNISED:
            violations.add("participant_kind", "must be USER or AGENT")
        if request.media is UNRECOGNISED:
            violations.add("media", "must be VOICE or VIDEO")
        principal = caller.principal
        # No kind means a user token.
        if principal.is_service and request.kind in (None, ParticipantKind.USER) and not request.user_id:
            violations.add("user_id", "is required when a service asks for a user token")
        violations.raise_if_any()

        kind = request.kind if isinstance(request.kind, ParticipantKind) else ParticipantKind.USER
        asked_media = request.media if isinstance(request.media, CallMedia) else None
        media = asked_media or CallMedia.VOICE
        if not principal.is_service:
            if kind is ParticipantKind.AGENT:
                raise permission_denied("only services may get an agent token", "AGENT_TOKEN_FORBIDDEN")
            if request.user_id and request.user_id != principal.subject:
                raise permission_denied("a token can only be issued for yourself", "USER_MISMATCH")
            facts = await self._owned(caller, request.conversation_id)
            _check_matches(facts, request.agent_id, asked_media)
            media = facts.media or media

        if kind is ParticipantKind.AGENT:
            identity = ids.agent_identity(request.agent_id)
        else:
            identity = request.user_id or principal.subject
            # A user token for a room that is not live starts a call: the quota decides.
            await self._calls.admit(request.conversation_id, identity, request.agent_id)
        minted = self._minter.mint(
            TokenSpec(
                conversation_id=request.conversation_id,
                agent_id=request.agent_id,
                kind=kind,
                media=media,
                identity=identity,
                display_name=request.display_name,
                ttl_seconds=request.ttl_seconds,
            )
        )
        # On the call's access log line ("rpc finished", INFO), not a line of its own: two JSON lines
        # per token were a tenth of agent_svc's CPU on the token path.
        context.add_call_fields(room=minted.room_name, kind=kind.value, media=media.value)
        return minted

    async def create_room(self, caller: Caller, conversation_id: str, agent_id: str) -> RoomCreated:
        agent_id = await self._agent_for(caller, conversation_id, agent_id)
        name = ids.room_name(conversation_id)
        await self._calls.admit(conversation_id, _user_of(caller), agent_id)
        async with self._lock(name):
            room, existed = await self._ensure_room(name)
            # LiveKit ignores the dispatch carried in tokens for pre-created rooms (livekit issue 4390):
            # dispatch explicitly, unless our agent already is.
            dispatched = await self._ensure_dispatch(name, conversation_id, agent_id)
        log.info("room ready", room=name, existed=existed, new_dispatch=not dispatched.already_dispatched)
        return RoomCreated(name, existed, room.sid, dispatched.dispatch_id)

    async def dispatch_agent(self, caller: Caller, conversation_id: str, agent_id: str) -> AgentDispatched:
        """Dispatches the agent unless it already is; creates the room first when there is none.

        LiveKit cannot list the dispatches of a room it does not have (it answers 503 after a few
        seconds), and its CreateDispatch would create the room with the server's defaults instead of
        our empty timeout and size limit: so the room is made here, as CreateRoom makes it.
        """
        agent_id = await self._agent_for(caller, conversation_id, agent_id)
        name = ids.room_name(conversation_id)
        await self._calls.admit(conversation_id, _user_of(caller), agent_id)
        async with self._lock(name):
            await self._ensure_room(name)
            return await self._ensure_dispatch(name, conversation_id, agent_id)

    async def list_participants(self, caller: Caller, conversation_id: str) -> list[ParticipantView]:
        _check_conversation_id(conversation_id)
        if not caller.principal.is_service:
            await self._owned(caller, conversation_id)
        name = ids.room_name(conversation_id)
        try:
            participants = await self._gateway.list_participants(name)
        except RoomNotFoundError:
            raise not_found("room", name) from None
        # Some LiveKit versions list an unknown room as empty: tell "empty" from "absent".
        if not participants and await self._gateway.find_room(name) is None:
            raise not_found("room", name)
        return participants

    async def delete_room(self, caller: Caller, conversation_id: str) -> RoomDeleted:
        _check_conversation_id(conversation_id)
        if not caller.principal.is_service:
            await self._owned(caller, conversation_id)
        name = ids.room_name(conversation_id)
        async with self._lock(name):
            room = await self._gateway.find_room(name)
            if room is not None:
                # Recorded first, so the call ends as hung up, not as left by its users.
                await self._calls.hung_up(conversation_id, room.sid)
            deleted = room is not None and await self._gateway.delete_room(name)
        log.info("room deleted", room=name, deleted=deleted)
        return RoomDeleted(name, deleted)

    async def _agent_for(self, caller: Caller, conversation_id: str, agent_id: str) -> str:
        """Validates the ids and returns the agent profile to dispatch with."""
        violations = Violations()
        ids.check_id(violations, "conversation_id", conversation_id)
        ids.check_id(violations, "agent_id", agent_id, required=False)
        violations.raise_if_any()
        if caller.principal.is_service:
            return agent_id or ids.DEFAULT_AGENT_ID
        facts = await self._owned(caller, conversation_id)
        _check_matches(facts, agent_id, None)
        return facts.agent_id or agent_id or ids.DEFAULT_AGENT_ID

    async def _owned(self, caller: Caller, conversation_id: str) -> ConversationFacts:
        facts = await self._conversations.resolve(caller.principal, caller.bearer_token, conversation_id)
        if facts.ended:
            raise failed_precondition("the conversation has ended", "CONVERSATION_ENDED")
        return facts

    async def _ensure_room(self, name: str) -> tuple[RoomInfo, bool]:
        """The room `name`, created with our policy unless it exists; and whether it existed."""
        existing = await self._gateway.find_room(name)
        if existing is not None:
            return existing, True
        policy = self._minter.policy
        created = await self._gateway.create_room(name, policy.empty_timeout_seconds, policy.max_participants)
        return created, False

    async def _ensure_dispatch(self, room: str, conversation_id: str, agent_id: str) -> AgentDispatched:
        agent_name = self._minter.policy.agent_name
        for dispatch in await self._gateway.list_dispatches(room):
            if dispatch.agent_name == agent_name:
                return AgentDispatched(room, dispatch.dispatch_id, already_dispatched=True)
        created = await self._gateway.create_dispatch(
            room, agent_name, ids.dispatch_metadata(conversation_id, agent_id)
        )
        log.info("agent dispatched", room=room, agent_name=agent_name)
        return AgentDispatched(room, created.dispatch_id, already_dispatched=False)

    def _lock(self, room: str) -> asyncio.Lock:
        lock = self._locks.get(room)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[room] = lock
        return lock


def _user_of(caller: Caller) -> str:
    """The user a call is for when a user asks; a service leaves it to the records."""
    return "" if caller.principal.is_service else caller.principal.subject


def _check_conversation_id(conversation_id: str) -> None:
    violations = Violations()
    ids.check_id(violations, "conversation_id", conversation_id)
    violations.raise_if_any()


def _check_matches(facts: ConversationFacts, agent_id: str, media: CallMedia | None) -> None:
    """A user's request must agree with the conversation chat_svc holds."""
    bad: list[FieldViolation] = []
    if facts.agent_id and agent_id and agent_id != facts.agent_id:
        bad.append(FieldViolation("agent_id", "does not match the conversation's agent"))
    if facts.media is not None and media is not None and media is not facts.media:
        bad.append(FieldViolation("media", "does not match the conversation's channel"))
    if bad:
        raise invalid_argument(bad)
