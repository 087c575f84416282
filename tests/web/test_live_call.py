"""The call page in real calls: Debian Chromium joins the real LiveKit server and talks with the voice
worker's agent (offline providers), its fake microphone playing espeak-ng sentences from a WAV.

What the person sees is read from the page (a probe records the badge, transcript lines and level
meters as they change) and each state is saved as a screenshot in screenshots/web/<test>/; what
really happened is asked of the servers: the LiveKit server's API for participants and tracks, and
chat_svc for the stored transcript.

Times in the recordings are seconds after the page opened the microphone. The agent greets about a
second after the join and LiveKit Agents ignores the caller during the first seconds of that
greeting (`aec_warmup_duration`), so a caller's first sentence comes after it, as a person's would.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from livekit.protocol import models as lk_models

from syntera.conversation.v1 import conversation_service_pb2 as cs
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.identity import bearer
from tests.voice.audio import word_error_rate
from tests.web.browser import Browser, BrowserOptions
from tests.web.calls import (
    PROBE,
    PreConnectListener,
    agent_token,
    delete_room,
    final_turns,
    final_values,
    in_room,
    levels,
    mic_opened_ms,
    participant,
    track,
    transcript_lines,
    until,
    wait_console,
    wait_page_time,
    wait_stored,
)
from tests.web.conftest import LaunchBrowser, Screens, WebMesh
from tests.web.speech import Line, write_speech
from tests.web.test_call_page import DEADLINE, sign_in_with_url_token, start_conversation, stub
from voice_worker.providers.whisper_stt import WhisperSTT

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

# Whisper tiny.en on espeak-ng speech through Chromium's audio processing and Opus: a sentence is
# recognisable, rarely word-perfect.
MAX_WORD_ERROR = 0.4
# From the end of a sentence to its final transcript and the agent's answer on the page.
ANSWER_MS = 15_000
# A level meter that moved: LiveKit reports levels from 0 to 1; espeak-ng speech reads well above this.
MOVED = 0.05

ORDER = "I would like to check the status of my order."
CANCEL = "Please cancel my subscription at the end of the month."
TECHNICIAN = "Can you send a technician tomorrow morning?"
GOOD_MORNING = "Good morning."


def user_line(text: str, *, after: int = 0) -> str:
    """JS: the seq of the first final user line after seq `after` that reads like `text` (by shared
    words), or null."""
    return f"""() => {{
        const want = {text.lower()!r}.replace(/[^a-z ]/g, '').split(' ');
        for (const li of document.querySelectorAll('#transcript li[data-role=user][data-final=true]')) {{
            if (Number(li.dataset.seq) <= {after}) continue;
            const text = li.querySelector('.text').textContent.toLowerCase();
            const got = text.replace(/[^a-z ]/g, '').split(' ');
            const shared = want.filter(w => got.includes(w)).length;
            if (shared >= Math.ceil(want.length / 2)) return Number(li.dataset.seq);
        }}
        return null;
    }}"""


def agent_line_after(seq: int) -> str:
    """JS: the seq of the first final agent line after `seq`, or null."""
    return f"""() => {{
        for (const li of document.querySelectorAll('#transcript li[data-role=agent][data-final=true]')) {{
            if (Number(li.dataset.seq) > {seq}) return Number(li.dataset.seq);
        }}
        return null;
    }}"""


async def audio_playing(browser: Browser) -> bool:
    """The agent's audio element exists, is not paused, and its clock advances (the browser plays it)."""
    return bool(
        await browser.evaluate(
            """async () => {
                const audio = document.querySelector('#media audio');
                if (!audio || audio.paused) return false;
                const before = audio.currentTime;
                await new Promise(r => setTimeout(r, 400));
                return !audio.paused && audio.currentTime > before;
            }"""
        )
    )


async def test_voice_call_greets_hears_mutes_and_hangs_up(
    call_mesh: WebMesh,
    launch_browser: LaunchBrowser,
    screens: Screens,
    chat_channel_call: grpc.aio.Channel,
    token: str,
    user_id: str,
    tmp_path: Path,
) -> None:
    order, cancel, technician = write_speech(
        tmp_path / "caller.wav", [(9.0, ORDER), (23.0, CANCEL), (31.0, TECHNICIAN)], total=42.0
    )
    browser = await launch_browser(BrowserOptions(fake_audio_file=tmp_path / "caller.wav"))
    await browser.init_script(PROBE)
    await sign_in_with_url_token(browser, call_mesh, token)
    agent_name = await browser.evaluate(
        "() => document.querySelector('#agent-select').selectedOptions[0].text"
    )
    conversation_id = await start_conversation(browser, "VOICE", "talking to the agent")
    (opened,) = await mic_opened_ms(browser)

    def at(line: Line, offset: float = 0.0, *, end: bool = False) -> int:
        return opened + int(((line.end if end else line.start) + offset) * 1000)

    # 1. Connected; the agent is in the list by name and kind, next to the caller.
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    await browser.wait("#participants li[data-kind=agent]", timeout_ms=15_000)
    await screens.take(browser, "connected-agent-joined")
    assert await browser.text("#participants li[data-kind=agent] .name") == agent_name
    assert await browser.text("#participants li[data-kind=agent] .tag") == "agent"
    assert await browser.text("#participants li[data-local=true] .name") == f"{user_id} (you)"
    assert await browser.text("#participants li[data-local=true] .tag") == "user"
    agent_identity = await browser.attribute("#participants li[data-kind=agent]", "data-identity")
    assert agent_identity
    server_agent = await participant(call_mesh.mesh, conversation_id, agent_identity)
    assert server_agent is not None
    assert server_agent.kind == lk_models.ParticipantInfo.Kind.AGENT

    # 4 (voice half). Screen sharing is not in a voice call's grant: refused at once, with a reason.
    await browser.click("#screen-share")
    await browser.wait("#call-notice")
    assert "Screen sharing is not available in a voice call" in await browser.text("#call-notice")
    await screens.take(browser, "screen-share-refused")
    me = await participant(call_mesh.mesh, conversation_id, user_id)
    assert track(me, lk_models.TrackSource.SCREEN_SHARE) is None

    # The greeting plays (the click on "Voice call" let the page play sound: no "Start audio").
    greeting = await browser.wait_for(agent_line_after(0), timeout_ms=15_000)
    assert await audio_playing(browser)
    assert await browser.evaluate("() => document.querySelector('#start-audio').hidden") is True
    await screens.take(browser, "greeted")

    # The caller's sentence, in one transcript line; then the agent's answer.
    heard = await browser.wait_for(user_line(ORDER), timeout_ms=at(order, end=True) - opened + ANSWER_MS)
    await screens.take(browser, "caller-heard")
    seen_finals = await final_values(browser, heard)
    # One line, shown as a live caption (interim) while the caller spoke or right after, and then
    # final in place: the worker captions the turn so far every second of speech, and its early
    # transcription comes before the end of the turn.
    assert seen_finals[0] == "false", seen_finals
    assert seen_finals[-1] == "true", seen_finals
    assert len([line for line in await transcript_lines(browser) if line["seq"] == str(heard)]) == 1
    answer = await browser.wait_for(agent_line_after(heard), timeout_ms=ANSWER_MS)
    await screens.take(browser, "agent-answered")
    assert answer > heard

    # 6. Each participant shows how good its connection is (LiveKit's quality updates).
    await browser.wait_for(
        """() => [...document.querySelectorAll('#participants li[data-identity]')].length === 2 &&
            [...document.querySelectorAll('#participants li[data-identity]')].every(
                li => ['excellent', 'good'].includes(li.dataset.quality))""",
        timeout_ms=15_000,
    )

    # 2. Mute before the next sentence: the server reports the track muted and the agent hears nothing.
    await wait_page_time(browser, at(cancel, -3.0))
    await browser.click("#mute")
    await browser.wait("#mute[aria-pressed=true]", state="attached")
    assert await browser.text("#mute") == "Unmute"

    async def microphone_muted(muted: bool) -> bool:
        mic = track(
            await participant(call_mesh.mesh, conversation_id, user_id), lk_models.TrackSource.MICROPHONE
        )
        return mic is not None and mic.muted == muted

    await until(lambda: microphone_muted(True), "the server reporting the microphone muted", within=5)
    assert await browser.text("#participants li[data-local=true] .mic-state") == "muted"
    await screens.take(browser, "muted")
    await wait_page_time(browser, at(cancel, 1.0, end=True))
    await browser.click("#mute")
    await until(lambda: microphone_muted(False), "the server reporting the microphone unmuted", within=5)
    await screens.take(browser, "unmuted")

    # ... and heard again after unmuting.
    again = await browser.wait_for(
        user_line(TECHNICIAN), timeout_ms=at(technician, end=True) - opened + ANSWER_MS
    )
    await browser.wait_for(agent_line_after(again), timeout_ms=ANSWER_MS)
    await screens.take(browser, "heard-after-unmute")

    def both_answered(messages: list[res.Message]) -> bool:
        return len(final_turns(messages, res.ROLE_AGENT)) >= 3

    stored = await wait_stored(chat_channel_call, conversation_id, token, both_answered)
    users = final_turns(stored, res.ROLE_USER)
    # The worker reported each user turn interim and then final under one segment: one message,
    # revised, and the page held its last revision in one line.
    (ordered,) = [m for m in users if m.seq == heard]
    assert ordered.revision >= 2
    shown_revision = await browser.attribute(f"#transcript li[data-seq='{heard}']", "data-revision")
    assert shown_revision == str(ordered.revision)
    # What was said while muted never reached the agent: two user turns, the order and the technician.
    assert [
        word_error_rate(s, m.text) <= MAX_WORD_ERROR for s, m in zip((ORDER, TECHNICIAN), users, strict=True)
    ] == [
        True,
        True,
    ], [m.text for m in users]
    assert all(word_error_rate(CANCEL, m.text) > MAX_WORD_ERROR for m in users)

    # The level meters moved for whoever spoke, and stayed down for the muted caller.
    seen = await levels(browser)
    mine = [lv for lv in seen if lv.identity == user_id]
    agents = [lv for lv in seen if lv.kind == "agent"]
    assert max(lv.value for lv in mine if at(order) <= lv.at_ms <= at(order, end=True)) > MOVED
    assert max(lv.value for lv in mine if at(cancel, 0.5) <= lv.at_ms <= at(cancel, end=True)) < 0.01
    assert max(lv.value for lv in agents) > MOVED
    assert any(lv.speaking for lv in agents)

    # 3. Hang up: the page leaves the room and the conversation shows the call ended.
    await browser.click("#hang-up")
    await browser.wait("#conversation[data-status=ended]", state="attached")
    assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
    assert await browser.text("#call-notice") == "This call has ended."

    async def caller_gone() -> bool:
        return all(p.identity != user_id for p in await in_room(call_mesh.mesh, conversation_id))

    await until(caller_gone, "the caller leaving the LiveKit room", within=10)
    await screens.take(browser, "hung-up")
    ended = await stub(chat_channel_call).GetConversation(
        cs.GetConversationRequest(conversation_id=conversation_id), metadata=bearer(token), timeout=DEADLINE
    )
    assert ended.conversation.status == res.CONVERSATION_STATUS_ENDED

    # Reopened later (a new page load): the stored transcript, and no call to join.
    await browser.goto(call_mesh.page_url)
    await browser.click(f"#conversation-list li[data-conversation-id='{conversation_id}'] button")
    await browser.wait(f"#transcript li[data-seq='{stored[-1].seq}']")
    shown = await transcript_lines(browser)
    assert [(line["seq"], line["text"]) for line in shown] == [(str(m.seq), m.text) for m in stored]
    assert all(line["final"] == "true" for line in shown)
    assert await browser.text("#call-notice") == "This call has ended."
    assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
    await screens.take(browser, "reopened")
    assert greeting < heard


async def create_call(channel: grpc.aio.Channel, token: str, title: str) -> str:
    """A voice conversation made through the API (another tab, a link someone sent): no join info."""
    created = await stub(channel).CreateConversation(
        cs.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_VOICE, title=title),
        metadata=bearer(token),
        timeout=DEADLINE,
    )
    return created.conversation.conversation_id


async def test_words_said_before_the_agent_joins_reach_it_through_the_pre_connect_buffer(
    web_mesh: WebMesh,
    launch_browser: LaunchBrowser,
    screens: Screens,
    chat_channel: grpc.aio.Channel,
    token: str,
    user_id: str,
    tmp_path: Path,
) -> None:
    # The caller says everything while the call is being set up, before any agent is in the room.
    # (web_mesh has no voice worker: the agent here is the test's own participant, joining when the
    # test says, so the order is certain; what it receives is what LiveKit Agents' handler would.)
    (said,) = write_speech(tmp_path / "caller.wav", [(0.05, GOOD_MORNING)], total=10.0)
    conversation_id = await create_call(chat_channel, token, "opened from a link")
    browser = await launch_browser(BrowserOptions(fake_audio_file=tmp_path / "caller.wav"))
    await browser.init_script(PROBE)
    # A link to the conversation: the page opens it and joins its call with a token it asks for.
    await browser.goto(f"{web_mesh.page_url}/?token={token}&conversation={conversation_id}")
    (opened,) = await mic_opened_ms(browser)
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    assert f"conversation={conversation_id}" in await browser.evaluate("() => location.search")
    await wait_page_time(browser, opened + int((said.end + 0.5) * 1000))
    assert [p.identity for p in await in_room(web_mesh.mesh, conversation_id)] == [user_id]
    # The page published its microphone with LiveKit's pre-connect buffer ...
    mic = track(await participant(web_mesh.mesh, conversation_id, user_id), lk_models.TrackSource.MICROPHONE)
    assert mic is not None
    assert lk_models.AudioTrackFeature.TF_PRECONNECT_BUFFER in mic.audio_features
    await screens.take(browser, "said-before-the-agent")

    # ... so the agent that joins now still gets what was said.
    listener = PreConnectListener()
    await listener.join(*await agent_token(web_mesh.mesh, conversation_id))
    try:
        await browser.wait("#participants li[data-kind=agent]")
        samples = await listener.audio()
    finally:
        await listener.leave()
    await screens.take(browser, "agent-joined")
    heard, _ = WhisperSTT().transcribe(samples)
    assert word_error_rate(GOOD_MORNING, heard) <= 0.5, heard
    # The recording runs from the microphone opening to the agent subscribing, not beyond.
    assert said.end < len(samples) / 16_000 < said.end + 15
    print(f"pre-connect recording: {len(samples) / 16_000:.1f} s, heard {heard!r}")


async def test_listen_only_caller_gets_a_start_audio_control_when_the_browser_blocks_sound(
    call_mesh: WebMesh,
    launch_browser: LaunchBrowser,
    screens: Screens,
    chat_channel_call: grpc.aio.Channel,
    token: str,
    user_id: str,
) -> None:
    conversation_id = await create_call(chat_channel_call, token, "listening only")
    # The person blocks the microphone and has not clicked anything on the page: Chromium's default
    # policy then refuses to play sound (with a microphone open it would allow it).
    browser = await launch_browser(BrowserOptions(media="deny"))
    await browser.init_script(PROBE)
    await browser.goto(f"{call_mesh.page_url}/?token={token}&conversation={conversation_id}")
    # Watched through the console only: any evaluate or wait would count as the person's click.
    lines = await wait_console(browser, "could not playback audio", within=20)
    lines = await wait_console(browser, "probe: state connected")
    shown = [line for line in lines if "probe: start-audio" in line]
    assert shown[-1].endswith("shown"), shown
    assert not any("probe: playing AUDIO" in line for line in lines)
    await screens.take(browser, "sound-blocked")

    # One click on "Start audio" and the agent is heard.
    await browser.click("#start-audio")
    await wait_console(browser, "probe: playing AUDIO", within=5)
    await browser.wait("#start-audio", state="hidden")
    assert await audio_playing(browser)
    # The blocked microphone is explained, and the call goes on without it.
    assert "The browser blocked your microphone" in await browser.text("#call-notice")
    assert await browser.text("#mute") == "Unmute"
    await browser.wait_for(agent_line_after(0), timeout_ms=15_000)
    await screens.take(browser, "listening")
    me = await participant(call_mesh.mesh, conversation_id, user_id)
    assert me is not None
    assert track(me, lk_models.TrackSource.MICROPHONE) is None

    # The room disappears from the call server. This mesh ends a conversation with its call
    # (CALL_END_ENDS_CONVERSATION, the default): the page leaves the room and says the call ended.
    await delete_room(call_mesh.mesh, conversation_id)
    await browser.wait("#conversation[data-status=ended]", state="attached", timeout_ms=15_000)
    assert await browser.text("#call-notice") == "This call has ended."
    assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
    assert await browser.evaluate("() => document.querySelector('#reconnect').hidden") is True
    await screens.take(browser, "room-deleted-call-ended")
