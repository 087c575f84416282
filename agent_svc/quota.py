"""Usage and the quota guard: agent session and participant minutes, and calls running at once.

The limits are per deployment. A deployment runs on one LiveKit project, and LiveKit's free tier
counts per project: 5 concurrent agent sessions, 1,000 agent minutes and 5,000
participant minutes a month, whoever the users are. So the guard sums every user's calls;
usage is still metered per user and shown to each user, but no user has a limit of their own.

- A call takes an agent session from the moment it is admitted (token, room or dispatch for a room
  that is not live) until its room finishes; an admitted call whose room has not started counts
  for `hold_seconds` only, so a user who never joins does not keep a session.
- Minutes are metered from the participants' join and leave times (users and the agent for
  participant minutes, the agent for agent minutes), per calendar month in UTC; running calls
  count up to now.
- A limit is checked when a call starts. A call already running is never cut off, so a month can
  end slightly above a limit. 0 means unlimited.
- At 80 % of a monthly limit the guard logs a warning (once per limit and month in a process) and
  GetUsage raises `near_limit`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent_svc import metrics
from agent_svc.call_record import Usage
from agent_svc.call_store import CallStore
from servicekit import ids
from servicekit.auth import Principal
from servicekit.errors import QuotaViolation, Violations, permission_denied, quota_exceeded
from servicekit.times import US_PER_MINUTE, US_PER_SECOND, is_month, month_of, now_us

log = structlog.get_logger("agent_svc.quota")

CONCURRENT = "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS"
AGENT_MINUTES = "QUOTA_AGENT_MINUTES_PER_MONTH"
PARTICIPANT_MINUTES = "QUOTA_PARTICIPANT_MINUTES_PER_MONTH"
WARNING_SHARE = 0.8
DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class QuotaLimits:
    """The deployment's limits; 0 means unlimited."""

    concurrent_agent_sessions: int = 5
    agent_minutes_per_month: int = 1000
    participant_minutes_per_month: int = 5000
    hold_seconds: float = 120.0
    # How old the month's minutes may be when a call is admitted (see `QuotaGuard._month_usage`).
    usage_refresh_seconds: float = 1.0


@dataclass(frozen=True)
class QuotaState:
    """One limit and how much of it is used."""

    quota_id: str
    limit: int
    used: float

    @property
    def near_limit(self) -> bool:
        return self.limit > 0 and self.used >= WARNING_SHARE * self.limit

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.used >= self.limit


@dataclass(frozen=True)
class UsageReport:
    """GetUsage's answer in domain terms; `show_used` is False for user callers."""

    month: str
    user_id: str
    agent_minutes: float
    participant_minutes: float
    live_calls: int
    quotas: tuple[QuotaState, ...]
    show_used: bool


class QuotaGuard:
    """Admits calls within the limits and reports usage.

    Args:
        store: The call store (counts and minutes come from it).
        limits: The deployment's limits.
        clock: UTC microseconds now.
    """

    def __init__(self, store: CallStore, limits: QuotaLimits, clock: Callable[[], int] = now_us) -> None:
        self._store = store
        self._limits = limits
        self._clock = clock
        # Check-then-hold must not interleave within this process, or two calls could both take
        # the last session. (Replicas can still race by a call; the next admission sees both.)
        self._admission = asyncio.Lock()
        self._warned: set[tuple[str, str]] = set()
        self._usage: dict[str, tuple[int, Usage]] = {}
        self._usage_refresh_us = int(limits.usage_refresh_seconds * US_PER_SECOND)

    @property
    def limits(self) -> QuotaLimits:
        return self._limits

    async def admit(self, conversation_id: str, user_id: str, agent_id: str) -> None:
        """Lets a call start, holding its session; RESOURCE_EXHAUSTED naming each limit reached.

        A call that is already live (or admitted and not started yet) is let through again: a
        second token or a reconnect is not a new session.
        """
        async with self._admission:
            now = self._clock()
            stored = await self._store.load(conversation_id)
            if stored is not None and stored.live(now):
                return  # its session is taken (or held) already; a second hold would outlive the call
            states = await self._deployment_states(
                month_of(now), now, excluding=conversation_id, for_admission=True
            )
            hit = tuple(
                QuotaViolation(s.quota_id, DEPLOYMENT, s.limit, _describe(s)) for s in states if s.exhausted
            )
            if hit:
                metrics.refused(v.quota_id for v in hit)
                log.warning(
                    "call refused: quota reached",
                    conversation_id=conversation_id,
                    limits=[v.quota_id for v in hit],
                )
                raise quota_exceeded(hit)
            hold_until = now + int(self._limits.hold_seconds * US_PER_SECOND)
            await self._store.reserve(conversation_id, user_id, agent_id, now, hold_until)

    async def usage(self, principal: Principal, user_id: str, month: str) -> UsageReport:
        """GetUsage: a user's own usage, or for services any user's or the deployment's."""
        violations = Violations()
        ids.check_id(violations, "user_id", user_id, required=False)
        if month and not is_month(month):
            violations.add("month", "must be a calendar month written YYYY-MM")
        violations.raise_if_any()
        if not principal.is_service:
            if user_id and user_id != principal.subject:
                raise permission_denied("users can only see their own usage", "USAGE_NOT_OWN")
            user_id = principal.subject
        now = self._clock()
        month = month or month_of(now)
        calls = await self._store.for_month(month, user_id)
        used = sum((c.record.usage(now, month) for c in calls), Usage())
        return UsageReport(
            month=month,
            user_id=user_id,
            agent_minutes=_minutes(used.agent_us),
            participant_minutes=_minutes(used.participant_us),
            live_calls=sum(1 for c in calls if c.record.started and not c.record.ended),
            quotas=tuple(await self._deployment_states(month, now)),
            show_used=principal.is_service,
        )

    async def check_warnings(self) -> None:
        """Logs the 80 % warnings for the current month (the reconciler calls this periodically)."""
        now = self._clock()
        await self._deployment_states(month_of(now), now)

    async def _month_usage(self, month: str, now: int, *, fresh: bool) -> Usage:
        """The deployment's minutes in `month`; unless `fresh`, read again at most every
        `usage_refresh_seconds`.

        Summing them reads every call of the month, which grows with use; doing that for every
        admission, under the admission lock, made call setup wait on it. For admissions, minutes a
        second old are as good for a monthly limit (calls running over a limit are never cut off
        anyway); the count of calls running at once, which the concurrency limit needs exactly, is
        read fresh. GetUsage and the warnings always read fresh.
        """
        cached = self._usage.get(month)
        if not fresh and cached is not None and 0 <= now - cached[0] < self._usage_refresh_us:
            return cached[1]
        used = sum((c.record.usage(now, month) for c in await self._store.for_month(month)), Usage())
        self._usage = {month: (now, used)}
        return used

    async def _deployment_states(
        self, month: str, now: int, excluding: str = "", *, for_admission: bool = False
    ) -> list[QuotaState]:
        """Each limit and its use. For an admission, only the limits that are set (0 is unlimited:
        nothing to count, and counting is what an admission waits for) and minutes up to a second
        old (see `_month_usage`)."""
        limits = self._limits
        states: list[QuotaState] = []
        if not for_admission or limits.concurrent_agent_sessions:
            live = await self._store.live_count(now, excluding=excluding)
            states.append(QuotaState(CONCURRENT, limits.concurrent_agent_sessions, float(live)))
        if not for_admission or limits.agent_minutes_per_month or limits.participant_minutes_per_month:
            used = await self._month_usage(month, now, fresh=not for_admission)
            states += [
                QuotaState(AGENT_MINUTES, limits.agent_minutes_per_month, _minutes(used.agent_us)),
                QuotaState(
                    PARTICIPANT_MINUTES, limits.participant_minutes_per_month, _minutes(used.participant_us)
                ),
            ]
        for state in states:
            monthly = state.quota_id != CONCURRENT
            if monthly and state.near_limit and (state.quota_id, month) not in self._warned:
                self._warned.add((state.quota_id, month))
                log.warning(
                    "usage at 80 % of a monthly limit",
                    limit_name=state.quota_id,
                    month=month,
                    used_minutes=round(state.used, 1),
                    limit_minutes=state.limit,
                )
        metrics.observe_quotas(states)
        return states


def _minutes(us: int) -> float:
    return round(us / US_PER_MINUTE, 3)


def _describe(state: QuotaState) -> str:
    if state.quota_id == CONCURRENT:
        return f"{state.limit} calls with an agent are running, the most allowed at once ({CONCURRENT})"
    what = "agent" if state.quota_id == AGENT_MINUTES else "participant"
    return f"this month's {state.limit} {what} minutes are used up ({state.quota_id})"
