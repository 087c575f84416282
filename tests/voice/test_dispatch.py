"""The job reads which conversation and agent it serves from the dispatch metadata."""

from __future__ import annotations

import pytest

from voice_worker.worker import DispatchMetadataError, parse_dispatch

pytestmark = pytest.mark.unit


def test_metadata_names_conversation_and_agent() -> None:
    info = parse_dispatch('{"conversationId": "c1", "agentId": "a1"}', "conversation:c1")
    assert (info.conversation_id, info.agent_id) == ("c1", "a1")


def test_room_name_and_default_agent_when_metadata_is_missing() -> None:
    info = parse_dispatch("", "conversation:c9")
    assert (info.conversation_id, info.agent_id) == ("c9", "default")


def test_unusable_metadata_and_room_name_are_refused() -> None:
    with pytest.raises(DispatchMetadataError):
        parse_dispatch("not json", "some-room")
