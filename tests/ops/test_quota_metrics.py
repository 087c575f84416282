"""agent_svc's quota metrics follow the quota guard: use and limits per limit, refusals counted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from agent_svc.call_store import CallStore
from agent_svc.quota import CONCURRENT, QuotaGuard, QuotaLimits
from servicekit.errors import DomainError, ErrorKind
from tests.support.mesh import StoreLike

pytestmark = pytest.mark.grpc


@pytest.fixture
async def calls(store: StoreLike) -> AsyncIterator[CallStore]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store.uri, tz_aware=True, timeoutMS=5000)
    call_store = CallStore(client[f"quota_{uuid.uuid4().hex[:10]}"])
    await call_store.prepare()
    yield call_store
    await client.close()


def _sample(name: str, quota: str) -> float:
    return REGISTRY.get_sample_value(name, {"quota": quota}) or 0.0


async def test_admissions_set_use_and_limit_and_refusals_are_counted(calls: CallStore) -> None:
    guard = QuotaGuard(calls, QuotaLimits(concurrent_agent_sessions=1))
    refused_before = _sample("syntera_agent_quota_refusals_total", CONCURRENT)
    await guard.admit("conv-a", "alice", "default")
    await guard.check_warnings()
    assert _sample("syntera_agent_quota_used", CONCURRENT) == 1
    assert _sample("syntera_agent_quota_limit", CONCURRENT) == 1
    with pytest.raises(DomainError) as refused:
        await guard.admit("conv-b", "bob", "default")
    assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert _sample("syntera_agent_quota_refusals_total", CONCURRENT) == refused_before + 1
