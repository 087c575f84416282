"""The transcript recorder in a call: what LiveKit's session commits becomes the segments chat_svc gets.

A real `AgentSession` runs the call (`voice_worker.call.Call`, as in production) on the scripted
models of `tests.voice.fake_speech`; the recorder writes to a real outbox and the sender delivers
to an in-memory sink. The slow tiers run Whisper and espeak-ng on real audio; these check the
recorder's rules in seconds: one segment per turn with a stable id, interim text then final,
latency figures, an interrupted answer stored with what was said, nothing heard left behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit.agents.voice.transcription.synchronizer import TranscriptSynchronizer

from tests.support.eventually import eventually
from tests.voice.fake_speech import (
    RATE,
    Script,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedVAD,
    SilentMicrophone,
    SilentTTS,
)
from voice_worker.call import Call, DispatchInfo
from voice_worker.outbox import Outbox, outbox_path
from voice_worker.profile import AgentProfile
from voice_worker.providers import Providers
from voice_worker.segments import Segment
from voice_worker.sender import OutboxSender
from voice_worker.settings import VoiceWorkerSettings
from voice_worker.simulate import VirtualSpeaker
from voice_worker.transcripts import TranscriptRecorder

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

CALL_ID = "job-1"
CONVERSATION_ID = "c1"
GREETING = "Hello, how can I help?"
END_OF_TURN_SILENCE = 0.3


class Sink:
    """chat_svc's ReportTranscript as the sender sees it: every state delivered, in order."""

    def __init__(self) -> None:
        self.delivered: list[Segment] = []
        self.call_metadata: dict[str, str] = {}

    async def report(
        self,
        conversation_id: str,
        segments: Sequence[Segment],
        call_metadata: Mapping[str, str] | None = None,
    ) -> None:
        assert conversation_id == CONVERSATION_ID
        self.delivered.extend(segments)
        self.call_metadata.update(call_metadata or {})

    def finals(self) -> list[Segment]:
        """The last state of each turn, in the order the turns were first reported."""
        last: dict[str, Segment] = {}
        for state in self.delivered:
            last[state.segment_id] = state
        return [s for s in last.values() if s.final]


@dataclass
class RunningCall:
    call: Call
    sink: Sink
    microphone: SilentMicrophone
    llm: ScriptedLLM


StartCall = Callable[[Script], Awaitable[RunningCall]]


@pytest.fixture
async def start_call(tmp_path: Path) -> AsyncIterator[StartCall]:
    started: list[tuple[RunningCall, TranscriptSynchronizer]] = []

    async def start(script: Script) -> RunningCall:
        settings = VoiceWorkerSettings(SYNTERA_DEV_MODE=True, _env_file=None)  # type: ignore[call-arg]
        outbox = Outbox(outbox_path(tmp_path, CALL_ID))
        sink = Sink()
        sender = OutboxSender(
            outbox, sink, initial_backoff=0.05, max_backoff=0.1, call_metadata={"providers": "fake"}
        )
        sender.start()
        language_model = ScriptedLLM(script)
        call = Call(
            settings=settings,
            call_id=CALL_ID,
            dispatch=DispatchInfo(CONVERSATION_ID, "default"),
            profile=AgentProfile(agent_id="default", display_name="Test", greeting=GREETING),
            providers=Providers(
                mode="offline",
                stt=ScriptedSTT(script),
                llm=language_model,
                tts=SilentTTS(script),
                vad=ScriptedVAD(script),
                stt_model="scripted",
                llm_model="scripted",
                tts_model="silent",
                end_of_turn_silence=END_OF_TURN_SILENCE,
            ),
            outbox=outbox,
            sender=sender,
        )
        microphone = SilentMicrophone()
        # As `voice_worker.simulate` plays a call: a loudspeaker that plays in real time, with the
        # agent's text paced to it, so an interruption cuts the text where the audio stopped.
        sync = TranscriptSynchronizer(next_in_chain_audio=VirtualSpeaker(RATE), next_in_chain_text=None)
        call.session.input.audio = microphone
        call.session.output.audio = sync.audio_output
        call.session.output.transcription = sync.text_output
        await call.session.start(call.agent, record=False)
        running = RunningCall(call, sink, microphone, language_model)
        started.append((running, sync))
        return running

    yield start
    for running, sync in started:
        running.microphone.close()
        await running.call.finish()
        await sync.aclose()


def turns(sink: Sink) -> list[tuple[str, str]]:
    return [(s.role, s.text) for s in sink.finals()]


async def test_each_turn_is_one_segment_first_interim_then_final_with_its_figures(
    start_call: StartCall,
) -> None:
    script = Script().say(1.0, 1.6, "Where is my order", reply="It ships tomorrow.")
    script.say(3.2, 3.7, "Thank you", reply="You are welcome.")
    running = await start_call(script)
    sink, call = running.sink, running.call

    await eventually(
        lambda: len(sink.finals()) == 5, within=15.0, what=lambda: f"five turns; have {turns(sink)}"
    )
    assert await call.finish()

    assert turns(sink) == [
        ("agent", GREETING),
        ("user", "Where is my order"),
        ("agent", "It ships tomorrow."),
        ("user", "Thank you"),
        ("agent", "You are welcome."),
    ]
    assert running.llm.asked == ["Where is my order", "Thank you"]
    ids = [s.segment_id for s in sink.finals()]
    assert ids[1] == f"{CALL_ID}:user:0"
    assert ids[3] == f"{CALL_ID}:user:1"
    assert all(i.startswith(f"{CALL_ID}:agent:") for i in ids[0::2])
    # The user's turn is first reported interim, under the id its final state keeps.
    first_user = [s for s in sink.delivered if s.segment_id == ids[1]]
    assert not first_user[0].final
    assert first_user[0].text == "Where is"
    assert first_user[-1].final
    # Figures: the user turn's end of turn, and the answer's model and voice latencies.
    user, answer = sink.finals()[1], sink.finals()[2]
    assert user.metrics.end_of_turn_delay is not None
    assert answer.metrics.llm_time_to_first_token is not None
    assert answer.metrics.tts_time_to_first_byte is not None
    assert answer.metrics.end_of_turn_delay == user.metrics.end_of_turn_delay
    assert user.start_time is not None
    assert answer.end_time is not None
    assert not any(s.interrupted for s in sink.finals())
    recorder = call.recorder
    assert (recorder.user_turns, recorder.agent_turns, recorder.interrupted_turns) == (2, 3, 0)
    assert len(recorder.response_latencies) == 2
    assert sink.call_metadata == {"providers": "fake"}


async def test_an_answer_cut_short_by_the_caller_is_stored_interrupted_with_what_was_said(
    start_call: StartCall,
) -> None:
    long_answer = " ".join(f"word{n}" for n in range(30))  # about 3.6 s of speech
    script = Script().say(1.0, 1.5, "Tell me everything", reply=long_answer)
    # The caller talks over the answer (it starts at about 2 s) for longer than LiveKit's minimum.
    script.say(3.0, 4.0, "Stop please", reply="Stopping.")
    running = await start_call(script)
    sink = running.sink

    await eventually(
        lambda: ("agent", "Stopping.") in turns(sink),
        within=15.0,
        what=lambda: f"the last answer; have {turns(sink)}",
    )
    cut = [s for s in sink.finals() if s.role == "agent" and s.text.startswith("word0")]
    assert len(cut) == 1
    assert cut[0].interrupted
    assert 0 < len(cut[0].text.split()) < 30, cut[0].text
    assert long_answer.startswith(cut[0].text)
    assert [t for t in turns(sink) if t[0] == "user"] == [
        ("user", "Tell me everything"),
        ("user", "Stop please"),
    ]
    assert running.call.recorder.interrupted_turns == 1


def test_a_turn_heard_but_never_committed_is_stored_final_when_the_call_ends(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "a.outbox.sqlite")
    recorder = TranscriptRecorder(CALL_ID, CONVERSATION_ID, outbox)
    recorder.user_transcribed("I would", is_final=False, at=100.0)
    recorder.user_transcribed("I would like", is_final=True, at=100.5)
    recorder.user_transcribed("a refund", is_final=False, at=101.0)
    pending = outbox.peek(10)
    assert [(p.segment.text, p.segment.final) for p in pending] == [("I would like a refund", False)]
    recorder.close()  # the call ended before LiveKit committed the turn
    (state,) = [p.segment for p in outbox.peek(10)]
    assert (state.segment_id, state.text, state.final, state.start_time) == (
        f"{CALL_ID}:user:0",
        "I would like",  # what was final; the interim tail was never confirmed
        True,
        100.0,
    )
    assert recorder.user_turns == 1
    outbox.close()


def test_an_empty_commit_keeps_what_was_heard_and_an_agent_turn_with_no_words_is_not_stored(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "a.outbox.sqlite")
    recorder = TranscriptRecorder(CALL_ID, CONVERSATION_ID, outbox)
    recorder.user_transcribed("hello there", is_final=True, at=10.0)
    recorder.message_committed(
        role="user", item_id="i1", text="", interrupted=False, metrics={}, created_at=11.0
    )
    recorder.message_committed(
        role="assistant", item_id="i2", text="  ", interrupted=True, metrics={}, created_at=12.0
    )
    states = [p.segment for p in outbox.peek(10)]
    assert [(s.segment_id, s.text, s.final) for s in states] == [(f"{CALL_ID}:user:0", "hello there", True)]
    assert (recorder.user_turns, recorder.agent_turns) == (1, 0)
    recorder.close()  # nothing open: nothing more
    assert len(outbox.peek(10)) == 1
    outbox.close()
