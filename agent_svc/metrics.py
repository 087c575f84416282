"""agent_svc's own Prometheus metrics (RPC metrics come from servicekit.metrics): quota use.

The figures are the deployment's (the quota guard sums every user's calls), refreshed whenever the
guard computes them: at each call admission and on the reconciler's periodic check. Each replica
reports what it last saw; take the maximum across replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Counter, Gauge

from servicekit.metrics import NAMESPACE


class QuotaFigure(Protocol):
    """One limit and its use (agent_svc.quota.QuotaState)."""

    @property
    def quota_id(self) -> str: ...

    @property
    def limit(self) -> int: ...

    @property
    def used(self) -> float: ...


QUOTA_USED = Gauge(
    "quota_used",
    "Use of each deployment limit: concurrent agent sessions, or this month's minutes.",
    ["quota"],
    namespace=NAMESPACE,
    subsystem="agent",
)
QUOTA_LIMIT = Gauge(
    "quota_limit",
    "Each deployment limit (0: unlimited).",
    ["quota"],
    namespace=NAMESPACE,
    subsystem="agent",
)
QUOTA_REFUSALS = Counter(
    "quota_refusals_total",
    "Calls refused because a limit was reached, by limit.",
    ["quota"],
    namespace=NAMESPACE,
    subsystem="agent",
)


def observe_quotas(states: Iterable[QuotaFigure]) -> None:
    for state in states:
        QUOTA_USED.labels(state.quota_id).set(state.used)
        QUOTA_LIMIT.labels(state.quota_id).set(state.limit)


def refused(quota_ids: Iterable[str]) -> None:
    for quota_id in quota_ids:
        QUOTA_REFUSALS.labels(quota_id).inc()
