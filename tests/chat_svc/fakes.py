"""Hand-written fakes for chat_svc's domain: its store seam (`Collections`) and agent_svc (`CallSetup`).

The domain (`Conversations`, `MessageLog`, `Transcripts`) reaches MongoDB only through the two
collections in `chat_svc.store.Collections`, with a handful of driver calls. `FakeCollection` does
those calls in memory with MongoDB's meaning for the parts of the query language the domain uses,
and enforces the unique indexes that `chat_svc.store.ensure_indexes` declares on it, so the races the
domain guards against (two writers taking one seq, two creates with one request id) are real here.

Tests steer it with `fail_next` (the driver raises, as when the store is down) and `before_insert` /
`before_update` (another replica writes in between, as in a race).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from chat_svc.records import Channel, JoinGrant, now_us
from chat_svc.store import Collections
from servicekit.errors import DomainError, ErrorKind, not_found

Document = dict[str, Any]
_MISSING = object()


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _set(doc: Document, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def _compare(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    if operator == "$in":
        return value in operand
    if operator == "$exists":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING or value is None:
        return False  # MongoDB's range operators never match a missing field
    if operator == "$lt":
        return bool(value < operand)
    if operator == "$lte":
        return bool(value <= operand)
    if operator == "$gt":
        return bool(value > operand)
    if operator == "$gte":
        return bool(value >= operand)
    raise NotImplementedError(f"the fake store does not know {operator}")


def matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """MongoDB's filter semantics for the operators the domain uses."""
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(doc, branch) for branch in condition):
                return False
            continue
        if key == "$and":
            if not all(matches(doc, branch) for branch in condition):
                return False
            continue
        value = _get(doc, key)
        if isinstance(condition, Mapping) and condition and all(k.startswith("$") for k in condition):
            if not all(_compare(value, op, operand) for op, operand in condition.items()):
                return False
        elif value is _MISSING or value != condition:
            return False
    return True


def _sorted(
    docs: list[Document], spec: str | Sequence[tuple[str, int]], direction: int = 1
) -> list[Document]:
    keys = [(spec, direction)] if isinstance(spec, str) else list(spec)
    for key, way in reversed(keys):  # stable sorts, least significant key first
        docs = sorted(docs, key=lambda d, k=key: _get(d, k), reverse=way < 0)
    return docs


@dataclass
class _Index:
    keys: tuple[str, ...]
    unique: bool
    partial: Mapping[str, Any] | None

    def key_of(self, doc: Document) -> tuple[Any, ...] | None:
        if not self.unique or (self.partial is not None and not matches(doc, self.partial)):
            return None
        return tuple(_get(doc, k) for k in self.keys)


@dataclass
class UpdateResult:
    matched_count: int
    modified_count: int


class FakeCursor:
    """`find(...)`: `.sort(...)`, `.limit(n)`, then `await .to_list()`."""

    def __init__(self, docs: list[Document]) -> None:
        self._docs = docs

    def sort(self, spec: str | Sequence[tuple[str, int]], direction: int = 1) -> FakeCursor:
        self._docs = _sorted(self._docs, spec, direction)
        return self

    def limit(self, count: int) -> FakeCursor:
        if count:
            self._docs = self._docs[:count]
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        return copy.deepcopy(self._docs if length is None else self._docs[:length])


class _Rows:
    def __init__(self, rows: list[Document]) -> None:
        self._rows = iter(rows)

    def __aiter__(self) -> _Rows:
        return self

    async def __anext__(self) -> Document:
        try:
            return next(self._rows)
        except StopIteration:
            raise StopAsyncIteration from None


@dataclass
class FakeCollection:
    """One collection in memory, with the driver methods chat_svc's domain calls."""

    name: str
    docs: dict[Any, Document] = field(default_factory=dict)
    indexes: dict[str, _Index] = field(default_factory=dict)
    # Called with the document about to be inserted or the filter about to be updated; a test
    # writes here what another replica would write in between.
    before_insert: Callable[[Document], None] | None = None
    before_update: Callable[[Mapping[str, Any]], None] | None = None
    calls: list[str] = field(default_factory=list)
    _failures: dict[str, list[Exception]] = field(default_factory=dict)

    def fail_next(self, method: str, error: Exception, times: int = 1) -> None:
        """The next `times` calls of `method` raise `error` (a driver error, as from a real client)."""
        self._failures.setdefault(method, []).extend([error] * times)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _matching(self, query: Mapping[str, Any]) -> Iterator[Document]:
        return (doc for doc in self.docs.values() if matches(doc, query))

    def put(self, doc: Document) -> None:
        """Stores `doc` as another writer would, unique indexes included (no hooks, no failures)."""
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"{self.name}: duplicate _id {doc['_id']!r}")
        for name, index in self.indexes.items():
            key = index.key_of(doc)
            if key is not None and any(index.key_of(other) == key for other in self.docs.values()):
                raise DuplicateKeyError(f"{self.name}: duplicate key for index {name}: {key!r}")
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    async def create_index(
        self,
        keys: Sequence[tuple[str, int]],
        *,
        name: str,
        unique: bool = False,
        partialFilterExpression: Mapping[str, Any] | None = None,  # noqa: N803 - the driver's keyword
    ) -> str:
        self.indexes[name] = _Index(tuple(k for k, _ in keys), unique, partialFilterExpression)
        return name

    async def find_one(
        self,
        query: Mapping[str, Any],
        *,
        sort: Sequence[tuple[str, int]] | None = None,
        projection: Mapping[str, Any] | None = None,  # whole documents: the callers read what they asked for
    ) -> Document | None:
        self._enter("find_one")
        found = list(self._matching(query))
        if sort:
            found = _sorted(found, sort)
        return copy.deepcopy(found[0]) if found else None

    def find(self, query: Mapping[str, Any]) -> FakeCursor:
        self._enter("find")
        return FakeCursor(list(self._matching(query)))

    async def insert_one(self, doc: Document) -> None:
        self._enter("insert_one")
        if self.before_insert is not None:
            self.before_insert(doc)
        self.put(doc)

    async def update_one(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> UpdateResult:
        self._enter("update_one")
        if self.before_update is not None:
            self.before_update(query)
        doc = next(self._matching(query), None)
        if doc is None:
            return UpdateResult(0, 0)
        before = copy.deepcopy(doc)
        for operator, fields in update.items():
            for path, value in fields.items():
                if operator == "$set":
                    _set(doc, path, copy.deepcopy(value))
                elif operator == "$inc":
                    current = _get(doc, path)
                    _set(doc, path, (0 if current is _MISSING else current) + value)
                else:
                    raise NotImplementedError(f"the fake store does not know {operator}")
        return UpdateResult(1, int(doc != before))

    async def aggregate(self, pipeline: Sequence[Mapping[str, Any]]) -> _Rows:
        """`$match` then `$group` by one field with `$max` accumulators: what the domain asks."""
        self._enter("aggregate")
        rows = [copy.deepcopy(d) for d in self.docs.values()]
        for stage in pipeline:
            ((operator, spec),) = stage.items()
            if operator == "$match":
                rows = [r for r in rows if matches(r, spec)]
            elif operator == "$group":
                groups: dict[Any, Document] = {}
                for row in rows:
                    key = _get(row, spec["_id"].lstrip("$"))
                    group = groups.setdefault(key, {"_id": key})
                    for out, accumulator in spec.items():
                        if out == "_id":
                            continue
                        ((kind, source),) = accumulator.items()
                        if kind != "$max":
                            raise NotImplementedError(f"the fake store does not know {kind}")
                        value = _get(row, source.lstrip("$"))
                        group[out] = value if out not in group else max(group[out], value)
                rows = list(groups.values())
            else:
                raise NotImplementedError(f"the fake store does not know {operator}")
        return _Rows(rows)


def fake_collections() -> tuple[Collections, FakeCollection, FakeCollection]:
    """Collections for the domain (typed as the real ones), and the two fakes behind them."""
    conversations, messages = FakeCollection("conversations"), FakeCollection("messages")
    return Collections(conversations, messages), conversations, messages  # type: ignore[arg-type]


class StoreDown(PyMongoError):
    """A driver error that is neither a lost connection nor a timeout."""


@dataclass
class FakeCallSetup:
    """agent_svc as chat_svc's domain sees it (`chat_svc.calls.CallSetup`), recording every call."""

    agents: set[str] = field(default_factory=lambda: {"default"})
    down: bool = False
    delete_fails: bool = False
    grants: list[tuple[str, str, str, Channel]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def _reachable(self) -> None:
        if self.down:
            raise DomainError(ErrorKind.UNAVAILABLE, "AGENT_SVC_UNAVAILABLE", "agent_svc is unavailable")

    async def check_agent(self, agent_id: str) -> None:
        self._reachable()
        if agent_id not in self.agents:
            raise not_found("agent", agent_id)

    async def join_grant(
        self, conversation_id: str, user_id: str, agent_id: str, channel: Channel
    ) -> JoinGrant:
        self._reachable()
        self.grants.append((conversation_id, user_id, agent_id, channel))
        return JoinGrant(
            token=f"lk-token-{len(self.grants)}",
            url="ws://livekit.test",
            room_name=f"conversation:{conversation_id}",
            identity=user_id,
            expire_time_us=now_us() + 3_600_000_000,
            agent_name="syntera-voice",
        )

    async def delete_room(self, conversation_id: str) -> None:
        self._reachable()
        if self.delete_fails:
            raise DomainError(ErrorKind.UNAVAILABLE, "LIVEKIT_UNAVAILABLE", "the room could not be deleted")
        self.deleted.append(conversation_id)
