"""The load the worker reports lets LiveKit offer it every call slot, and no more.

The two rules below are the LiveKit server's (a worker claims a job with `target_load - load`, and a
claim of 0 is none: livekit-server pkg/service/agentservice.go `JobRequestAffinity`) and LiveKit
Agents' (it answers "available" while load + accepted-but-not-started calls x the per-call load is
below its threshold: `AgentServer._is_available`).
"""

from __future__ import annotations

import pytest

from voice_worker.worker import SERVER_TARGET_LOAD, load_threshold, worker_load

pytestmark = pytest.mark.unit


def server_offers_job(load: float) -> bool:
    return max(0.0, SERVER_TARGET_LOAD - load) > 0


def worker_accepts(calls: int, reserved: int, max_calls: int) -> bool:
    load = worker_load(calls, max_calls)
    per_call = load / calls if calls else load_threshold(max_calls) / max_calls
    return load + reserved * per_call < load_threshold(max_calls)


@pytest.mark.parametrize("max_calls", [1, 2, 3, 5, 7, 10, 100])
def test_server_offers_a_job_until_every_slot_is_taken(max_calls: int) -> None:
    for calls in range(max_calls):
        assert server_offers_job(worker_load(calls, max_calls)), (calls, max_calls)
    assert not server_offers_job(worker_load(max_calls, max_calls))


@pytest.mark.parametrize("max_calls", [1, 2, 3, 5, 7, 10, 100])
def test_worker_accepts_exactly_its_free_slots_even_when_requests_arrive_together(max_calls: int) -> None:
    for calls in range(max_calls + 1):
        # `reserved` calls were accepted a moment ago and have not started yet.
        accepted = [r for r in range(max_calls + 1) if worker_accepts(calls, r, max_calls)]
        assert len(accepted) == max(0, max_calls - calls), (calls, max_calls)
