"""An agent dispatched to take over a call: the dispatch says so, and the history becomes its context."""

from __future__ import annotations

import pytest

from servicekit import ids
from voice_worker.history import Turn, chat_context
from voice_worker.worker import parse_dispatch

pytestmark = pytest.mark.unit


def test_agent_svc_resume_dispatch_is_read_by_the_worker() -> None:
    fresh = parse_dispatch(ids.dispatch_metadata("c1", "a1"), "conversation:c1")
    assert (fresh.conversation_id, fresh.agent_id, fresh.resume) == ("c1", "a1", False)
    again = parse_dispatch(ids.dispatch_metadata("c1", "a1", resume=True), "conversation:c1")
    assert again.resume is True
    # Only a real true resumes: a stray value does not make a fresh call greet with "I'm back".
    assert parse_dispatch('{"conversationId": "c1", "resume": "yes"}', "conversation:c1").resume is False
    assert ids.agent_of_dispatch(ids.dispatch_metadata("c1", "a1", resume=True)) == "a1"
    assert ids.agent_of_dispatch("not json") == ""


def test_history_becomes_the_agents_chat_context_in_order() -> None:
    turns = [
        Turn("assistant", "Hello."),
        Turn("user", "Where is my order?"),
        Turn("assistant", "On its way."),
    ]
    context = chat_context(turns)
    messages = [(m.role, m.text_content) for m in context.messages()]
    assert messages == [(t.role, t.text) for t in turns]
