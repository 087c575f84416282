"""AgentService's use cases on MongoDB: collection `agents`, string ids, idempotent creates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from agent_svc import agents
from agent_svc.agents import AgentProfile, ProviderMode, VoiceSettings
from servicekit import paging
from servicekit.auth import Principal
from servicekit.errors import DomainError, ErrorKind, Violations, not_found, permission_denied
from servicekit.ids import check_id

log = structlog.get_logger("agent_svc.agents")

COLLECTION = "agents"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# Optimistic-concurrency retries for UpdateAgent when another update lands in between.
_UPDATE_ATTEMPTS = 5

Document = dict[str, Any]


class AgentDirectory:
    """Agent profiles stored in MongoDB.

    Args:
        collection: The `agents` collection.
        clock: Current UTC time (injected so tests can pin it).
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._agents = collection
        self._clock = clock or _now_ms

    async def prepare(self) -> None:
        """Creates the indexes and seeds the built-in profile (never overwriting later edits)."""
        # `request_key` is present on every document: "<owner>/<request_id>" for idempotent creates,
        # "id/<agent_id>" otherwise, so one plain unique index covers both.
        await self._agents.create_index([("request_key", ASCENDING)], unique=True, name="request_key_unique")
        await self._agents.create_index([("display_name", ASCENDING)], name="display_name")
        now = self._clock()
        seed = dataclasses.replace(agents.DEFAULT_PROFILE, create_time=now, update_time=now)
        document = _to_document(seed)
        document.pop("_id")
        await self._agents.update_one(
            {"_id": seed.agent_id},
            {"$setOnInsert": document | {"request_key": f"id/{seed.agent_id}"}},
            upsert=True,
        )

    async def create(self, principal: Principal, profile: AgentProfile, request_id: str) -> AgentProfile:
        violations = Violations()
        agents.validate_profile(violations, profile)
        agents.check_request_id(violations, request_id)
        violations.raise_if_any()
        agent_id = uuid.uuid4().hex
        owner = "" if principal.is_service else principal.subject
        request_key = f"{principal.subject}/{request_id}" if request_id else f"id/{agent_id}"
        now = self._clock()
        created = dataclasses.replace(
            profile, agent_id=agent_id, owner_id=owner, create_time=now, update_time=now
        )
        try:
            await self._agents.insert_one(_to_document(created) | {"request_key": request_key})
        except DuplicateKeyError:
            existing = await self._agents.find_one({"request_key": request_key})
            if existing is None:  # the duplicate vanished in between; extremely unlikely
                raise DomainError(
                    ErrorKind.UNAVAILABLE, "CONCURRENT_CHANGE", "the agent changed concurrently; retry"
                ) from None
            log.info("agent create repeated", agent_id=existing["_id"])
            return _from_document(existing)
        log.info("agent created", agent_id=agent_id)
        return created

    async def get(self, agent_id: str) -> AgentProfile:
        violations = Violations()
        check_id(violations, "agent_id", agent_id)
        violations.raise_if_any()
        found = await self._agents.find_one({"_id": agent_id})
        if found is None:
            raise not_found("agent", agent_id)
        return _from_document(found)

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[AgentProfile], str]:
        """One page ordered by display name (then id); returns the page and the next page token."""
        violations = Violations()
        if page_size < 0:
            violations.add("page_size", "must not be negative")
        after = _after(page_token) if page_token else None
        if page_token and after is None:
            violations.add("page_token", paging.NOT_OURS)
        violations.raise_if_any()
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        query: Document = {}
        if after is not None:
            name, last_id = after
            query = {
                "$or": [{"display_name": {"$gt": name}}, {"display_name": name, "_id": {"$gt": last_id}}]
            }
        cursor = (
            self._agents.find(query).sort([("display_name", ASCENDING), ("_id", ASCENDING)]).limit(size + 1)
        )
        documents = [doc async for doc in cursor]
        page = [_from_document(doc) for doc in documents[:size]]
        next_token = (
            paging.encode({"n": page[-1].display_name, "id": page[-1].agent_id})
            if len(documents) > size
            else ""
        )
        return page, next_token

    async def update(self, principal: Principal, change: AgentProfile, paths: list[str]) -> AgentProfile:
        violations = Violations()
        check_id(violations, "agent.agent_id", change.agent_id)
        agents.check_update_mask(violations, paths)
        violations.raise_if_any()
        for _ in range(_UPDATE_ATTEMPTS):
            stored = await self._agents.find_one({"_id": change.agent_id})
            if stored is None:
                raise not_found("agent", change.agent_id)
            current = _from_document(stored)
            if not principal.is_service and principal.subject != current.owner_id:
                raise permission_denied("only the agent's owner may change it", "AGENT_NOT_OWNED")
            updated = agents.apply_update(current, change, paths)
            violations = Violations()
            agents.validate_profile(violations, updated)
            violations.raise_if_any()
            updated = dataclasses.replace(updated, update_time=self._clock())
            document = _to_document(updated) | {"request_key": stored["request_key"]}
            # A whole-document replace guarded by the previous update_time: a concurrent update makes
            # it match nothing, and we retry on fresh data instead of losing that update.
            result = await self._agents.replace_one(
                {"_id": current.agent_id, "update_time": current.update_time}, document
            )
            if result.matched_count == 1:
                log.info("agent updated", agent_id=current.agent_id, paths=sorted(paths))
                return updated
        raise DomainError(
            ErrorKind.UNAVAILABLE, "CONCURRENT_UPDATES", "the agent is being changed concurrently; retry"
        )


def _now_ms() -> dt.datetime:
    """Now in UTC at millisecond precision, what BSON dates keep, so responses match later reads."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _to_document(profile: AgentProfile) -> Document:
    voice = dataclasses.asdict(profile.voice_settings)
    voice["provider_mode"] = profile.voice_settings.provider_mode.value
    return {
        "_id": profile.agent_id,
        "display_name": profile.display_name,
        "instructions": profile.instructions,
        "greeting": profile.greeting,
        "voice_settings": voice,
        "owner_id": profile.owner_id,
        "create_time": profile.create_time,
        "update_time": profile.update_time,
    }


def _from_document(document: Mapping[str, Any]) -> AgentProfile:
    voice: Mapping[str, Any] = document.get("voice_settings") or {}
    return AgentProfile(
        agent_id=str(document["_id"]),
        display_name=document.get("display_name", ""),
        instructions=document.get("instructions", ""),
        greeting=document.get("greeting", ""),
        voice_settings=VoiceSettings(
            voice=voice.get("voice", ""),
            language=voice.get("language", ""),
            speaking_rate=float(voice.get("speaking_rate", 0.0)),
            stt_model=voice.get("stt_model", ""),
            llm_model=voice.get("llm_model", ""),
            tts_model=voice.get("tts_model", ""),
            provider_mode=ProviderMode(voice.get("provider_mode", ProviderMode.UNSPECIFIED.value)),
        ),
        owner_id=document.get("owner_id", ""),
        create_time=document.get("create_time"),
        update_time=document.get("update_time"),
    )


def _after(page_token: str) -> tuple[str, str] | None:
    """The display name and id of the last agent on the page before, from its `next_page_token`."""
    position = paging.read(page_token)
    if position is None:
        return None
    name, last_id = position.get("n"), position.get("id")
    return (name, last_id) if isinstance(name, str) and isinstance(last_id, str) else None
