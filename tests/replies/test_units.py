"""The pure parts of replies: the history a model is given, the scripted extract, the model choice."""

from __future__ import annotations

import pytest

from chat_svc.records import Message, Role, Source
from chat_svc.replies import HistoryTurn, bounded_history
from chat_svc.reply_records import Reply, ReplyState
from devrun.llm_standin import behaviour_of, reply_words
from llmkit.choice import (
    GeneratorKind,
    LanguageModelConfig,
    ModelProfile,
    ProviderChoiceError,
    check_model,
    choose_mode,
    default_mode,
    model_name,
)
from llmkit.responder import Turn, extract_summary

pytestmark = pytest.mark.unit


def _message(
    seq: int, role: Role, text: str, *, final: bool = True, reply: ReplyState | None = None
) -> Message:
    return Message(
        message_id=f"m{seq}",
        conversation_id="c",
        seq=seq,
        revision=1,
        role=role,
        source=Source.TEXT,
        text=text,
        final=final,
        interrupted=False,
        sender_id="x",
        create_time_us=0,
        update_time_us=0,
        reply=None if reply is None else Reply(reply, in_reply_to_seq=seq - 1),
    )


def test_history_keeps_final_turns_and_completed_replies_oldest_first() -> None:
    messages = [
        _message(1, Role.USER, "first"),
        _message(2, Role.AGENT, "answer", reply=ReplyState.COMPLETE),
        _message(3, Role.USER, "second"),
        _message(4, Role.AGENT, "half", reply=ReplyState.CANCELLED),
        _message(5, Role.USER, "spoken so f", final=False),
        _message(6, Role.AGENT, "", reply=ReplyState.FAILED),
        _message(7, Role.USER, "third"),
        _message(8, Role.USER, "after the one answered"),
    ]
    history = bounded_history(list(reversed(messages)), to_seq=7, max_messages=10, max_chars=1000)
    assert history == [
        HistoryTurn("user", "first"),
        HistoryTurn("agent", "answer"),
        HistoryTurn("user", "second"),
        HistoryTurn("user", "third"),
    ]


def test_history_is_bounded_by_messages_and_characters_keeping_the_newest() -> None:
    messages = [_message(n, Role.USER if n % 2 else Role.AGENT, f"turn {n:02d}") for n in range(1, 21)]
    newest_first = list(reversed(messages))
    by_count = bounded_history(newest_first, to_seq=19, max_messages=4, max_chars=1000)
    assert [t.text for t in by_count] == ["turn 16", "turn 17", "turn 18", "turn 19"]
    by_chars = bounded_history(newest_first, to_seq=19, max_messages=10, max_chars=15)
    assert [t.text for t in by_chars] == ["turn 18", "turn 19"]
    long = [_message(1, Role.USER, "x" * 50 + "END")]
    assert bounded_history(long, to_seq=1, max_messages=5, max_chars=10) == [
        HistoryTurn("user", "xxxxxxxEND")
    ]


def test_the_scripted_extract_quotes_and_counts_without_inventing() -> None:
    turns = [
        Turn("agent", "Hello!"),
        Turn("user", "My  router is   broken."),
        Turn("agent", "Sorry to hear that."),
        Turn("user", "It blinks red."),
        Turn("user", "Since Monday."),
        Turn("user", "Please help."),
    ]
    text = extract_summary(turns)
    assert text.startswith("Extract of the call, not a summary")
    assert '"My router is broken." / "It blinks red." / "Since Monday."' in text
    assert "4 user turns (1 not quoted), 2 agent turns." in text
    assert extract_summary([]) == ""
    assert "x" * 200 not in extract_summary([Turn("user", "x" * 500)])


def test_standin_directives() -> None:
    plain = behaviour_of("hello")
    assert (plain.words, plain.error, plain.stall_after, plain.times) == (12, None, None, None)
    odd = behaviour_of("[words=3][pace=0][error=429][times=2][drop-after=1][stall]")
    assert (odd.words, odd.pace_ms, odd.error, odd.times, odd.drop_after, odd.stall_after) == (
        3,
        0,
        429,
        2,
        1,
        0,
    )
    assert "".join(reply_words("[words=6] why not", 6, 7)) == "Stand-in reply #7 to: why not"


CONFIG = LanguageModelConfig("openai/gpt-4.1-mini", "key", "secret")
WITH_ENDPOINT = LanguageModelConfig(
    "openai/gpt-4.1-mini", "key", "secret", "http://127.0.0.1:1/v1", "", "llama3.2"
)


def test_the_model_choice_is_labelled_with_what_it_is() -> None:
    profile = ModelProfile("a", "Ann")
    assert model_name("offline", CONFIG, profile) == (GeneratorKind.SCRIPTED_RESPONDER, "profile-responder")
    assert model_name("offline", WITH_ENDPOINT, profile) == (
        GeneratorKind.OPENAI_COMPATIBLE_MODEL,
        "llama3.2",
    )
    pinned = ModelProfile("a", "Ann", llm_model="profile-responder")
    assert model_name("offline", WITH_ENDPOINT, pinned)[0] is GeneratorKind.SCRIPTED_RESPONDER
    assert model_name("cloud", CONFIG, profile) == (GeneratorKind.CLOUD_MODEL, "openai/gpt-4.1-mini")
    with pytest.raises(ProviderChoiceError):
        check_model("offline", CONFIG, ModelProfile("a", "Ann", llm_model="gpt-5"))
    with pytest.raises(ProviderChoiceError):
        choose_mode(ModelProfile("a", "Ann", provider_mode="cloud"), "offline", has_cloud_credentials=False)
    assert default_mode("auto", "wss://x.livekit.cloud", has_credentials=True) == "cloud"
    assert default_mode("auto", "ws://127.0.0.1:7880", has_credentials=True) == "offline"
