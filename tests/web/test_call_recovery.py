"""The call page when tokens expire and the call server goes away, in real calls (Chromium, the real
LiveKit server, the voice worker's agent).

These tests restart and kill the LiveKit server, so they run on a mesh of their own. Call tokens
live `CALL_TOKEN_TTL_SECONDS`: every call here outlives its first token. The mesh keeps a
conversation open when its call's room is gone (CALL_END_ENDS_CONVERSATION=false), so what is tested
is how the page gets back into the call; with the default the server ends the call instead, and the
page says so (test_live_call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from livekit.protocol import models as lk_models

from syntera.conversation.v1 import resources_pb2 as res
from tests.support.mesh import LIVEKIT, StoreLike
from tests.voice.audio import word_error_rate
from tests.web.browser import Browser, BrowserOptions
from tests.web.calls import (
    PROBE,
    badge_states,
    delete_room,
    final_turns,
    in_room,
    mic_opened_ms,
    page_now_ms,
    participant,
    track,
    transcript_lines,
    until,
    wait_page_time,
    wait_stored,
)
from tests.web.conftest import CALL_ENV, LaunchBrowser, Screens, WebMesh, _running_web_mesh
from tests.web.speech import write_speech
from tests.web.test_call_page import sign_in_with_url_token, start_conversation
from tests.web.test_live_call import ANSWER_MS, MAX_WORD_ERROR, agent_line_after, user_line

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(240)]

ORDER = "I would like to check the status of my order."
TECHNICIAN = "Can you send a technician tomorrow morning?"
# A join attempt (signalling socket, then media) is bounded by the page's timeouts; "connecting"
# for longer than this would be a page that hangs.
LONGEST_CONNECTING_MS = 12_000


@pytest.fixture(scope="module")
def fault_mesh(
    store: StoreLike, built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebMesh]:
    env = CALL_ENV | {"CALL_END_ENDS_CONVERSATION": "false"}
    with _running_web_mesh(
        store, tmp_path_factory.mktemp("fault-mesh"), with_worker=True, extra_env=env
    ) as mesh:
        yield mesh


@pytest.fixture
async def chat(fault_mesh: WebMesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(fault_mesh.chat_addr) as channel:
        yield channel


async def token_expiry_ms(browser: Browser) -> int:
    """When the token the page holds expires (page clock, ms)."""
    expires = await browser.evaluate(
        "() => Date.parse(document.querySelector('#token-expiry').dataset.expires || '') || 0"
    )
    assert expires, "the page shows no call token expiry"
    return int(expires)


def worker_registrations(mesh: WebMesh) -> int:
    """How often a voice worker has registered with the LiveKit server (the server's log says so)."""
    log = (mesh.mesh.log_dir / "livekit.log").read_text(errors="replace")
    return log.count("worker registered")


async def until_sync(probe: Callable[[], bool], what: str, within: float) -> None:
    async def check() -> bool:
        return probe()

    await until(check, what, within=within)


def connecting_spells(states: list[tuple[int, str]], until_ms: int) -> list[int]:
    """How long each stretch of "connecting" lasted (ms), the last one up to `until_ms`."""
    spells: list[int] = []
    for index, (at, state) in enumerate(states):
        if state == "connecting":
            end = states[index + 1][0] if index + 1 < len(states) else until_ms
            spells.append(end - at)
    return spells


async def test_expired_token_and_a_restarted_call_server_keep_the_call_and_its_transcript(
    fault_mesh: WebMesh,
    launch_browser: LaunchBrowser,
    screens: Screens,
    chat: grpc.aio.Channel,
    token: str,
    tmp_path: Path,
) -> None:
    order, technician = write_speech(tmp_path / "caller.wav", [(9.0, ORDER), (31.0, TECHNICIAN)], total=45.0)
    browser = await launch_browser(BrowserOptions(fake_audio_file=tmp_path / "caller.wav"))
    await browser.init_script(PROBE)
    await sign_in_with_url_token(browser, fault_mesh, token)
    conversation_id = await start_conversation(browser, "VOICE", "through the outage")
    (opened,) = await mic_opened_ms(browser)
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    first_expiry = await token_expiry_ms(browser)
    heard = await browser.wait_for(user_line(ORDER), timeout_ms=int(order.end * 1000) + ANSWER_MS)
    await browser.wait_for(agent_line_after(heard), timeout_ms=ANSWER_MS)

    # The first token expires mid-call: the page already holds a fresh one from the API, and the
    # call never left "connected".
    await wait_page_time(browser, first_expiry + 500)
    assert await token_expiry_ms(browser) > first_expiry
    assert await browser.attribute("#livekit-status", "data-state") == "connected"
    assert [state for _, state in await badge_states(browser)] == ["connecting", "connected"]
    await screens.take(browser, "token-renewed")
    before = await transcript_lines(browser)

    # The call server crashes and is started again (it forgets every room): the page says it is
    # reconnecting; LiveKit's client joins the new server with the token it holds, and so does the
    # agent's, so the same agent session goes on.
    agent = await browser.attribute("#participants li[data-kind=agent]", "data-identity")
    mesh = fault_mesh.mesh
    mesh.kill(LIVEKIT)
    try:
        await browser.wait("#livekit-status[data-state=reconnecting]", state="attached", timeout_ms=10_000)
        assert "Reconnecting" in await browser.text("#call-notice")
        await screens.take(browser, "reconnecting")
    finally:
        await asyncio.to_thread(mesh.start, LIVEKIT)
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=20_000)
    await browser.wait(f"#participants li[data-kind=agent][data-identity='{agent}']", timeout_ms=20_000)
    await screens.take(browser, "recovered")
    assert await browser.evaluate("() => document.querySelector('#call-notice').hidden") is True
    assert opened + technician.start * 1000 > await page_now_ms(browser), "recovered too late for the test"

    # Heard and answered after the restart ...
    again = await browser.wait_for(user_line(TECHNICIAN), timeout_ms=int(technician.end * 1000) + ANSWER_MS)
    await browser.wait_for(agent_line_after(again), timeout_ms=ANSWER_MS)
    await screens.take(browser, "heard-after-restart")
    # ... and nothing shown before it was lost or doubled.
    after = await transcript_lines(browser)
    assert after[: len(before)] == before
    assert len({line["seq"] for line in after}) == len(after)
    states = await badge_states(browser)
    assert [state for _, state in states] == ["connecting", "connected", "reconnecting", "connected"]
    assert all(
        spell < LONGEST_CONNECTING_MS for spell in connecting_spells(states, await page_now_ms(browser))
    )

    stored = await wait_stored(
        chat, conversation_id, token, lambda ms: len(final_turns(ms, res.ROLE_USER)) >= 2
    )
    users = final_turns(stored, res.ROLE_USER)
    assert word_error_rate(ORDER, users[0].text) <= MAX_WORD_ERROR, users[0].text
    assert word_error_rate(TECHNICIAN, users[-1].text) <= MAX_WORD_ERROR, users[-1].text


async def test_call_server_down_for_long_the_page_says_so_and_rejoins_with_a_fresh_token(
    fault_mesh: WebMesh,
    launch_browser: LaunchBrowser,
    screens: Screens,
    chat: grpc.aio.Channel,
    token: str,
    user_id: str,
    tmp_path: Path,
) -> None:
    (order,) = write_speech(tmp_path / "caller.wav", [(9.0, ORDER)], total=20.0)
    browser = await launch_browser(BrowserOptions(fake_audio_file=tmp_path / "caller.wav"))
    await browser.init_script(PROBE)
    await sign_in_with_url_token(browser, fault_mesh, token)
    conversation_id = await start_conversation(browser, "VOICE", "server down")
    await mic_opened_ms(browser)
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    first_expiry = await token_expiry_ms(browser)
    heard = await browser.wait_for(user_line(ORDER), timeout_ms=int(order.end * 1000) + ANSWER_MS)
    await browser.wait_for(agent_line_after(heard), timeout_ms=ANSWER_MS)
    before = await transcript_lines(browser)

    mesh = fault_mesh.mesh
    registrations = worker_registrations(fault_mesh)
    mesh.kill(LIVEKIT)
    try:
        await browser.wait("#livekit-status[data-state=reconnecting]", state="attached", timeout_ms=10_000)
        assert "Reconnecting" in await browser.text("#call-notice")
        await screens.take(browser, "reconnecting")
        # LiveKit gives up resuming; the page rejoins a few times by itself, each attempt failing
        # fast, still saying "reconnecting"; then it says why it stopped and offers Reconnect.
        await browser.wait("#reconnect", timeout_ms=60_000)
        assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
        notice = await browser.text("#call-notice")
        assert "Cannot reach the call server (LiveKit)" in notice
        assert "Press Reconnect" in notice
        await screens.take(browser, "gave-up")
        states = await badge_states(browser)
        assert [s for _, s in states][-3:] == ["connected", "reconnecting", "disconnected"], states
        gave_up_after_ms = states[-1][0] - states[-2][0]
        assert gave_up_after_ms < 60_000
        assert all(
            spell < LONGEST_CONNECTING_MS for spell in connecting_spells(states, await page_now_ms(browser))
        )
        # The transcript is not part of the call: it kept every line.
        assert (await transcript_lines(browser))[: len(before)] == before
    finally:
        mesh.start(LIVEKIT)
    print(f"the page tried for {gave_up_after_ms / 1000:.1f} s before offering Reconnect")

    # The voice worker retries its own connection with a growing delay, and the server drops a
    # dispatch no worker is registered for: the test reconnects once the worker is back.
    await until_sync(
        lambda: worker_registrations(fault_mesh) > registrations, "the voice worker re-registering", 30
    )

    # The server is back: Reconnect joins with a token fetched after the first one expired.
    await wait_page_time(browser, first_expiry + 500)
    await browser.click("#reconnect")
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    assert await token_expiry_ms(browser) > first_expiry
    await browser.wait("#participants li[data-kind=agent]", timeout_ms=40_000)
    await screens.take(browser, "rejoined")
    assert [p.identity for p in await in_room(mesh, conversation_id) if p.identity == user_id] == [user_id]
    # The caller is back in the room with the microphone it had, unmuted, and the agent with it.
    me = await participant(mesh, conversation_id, user_id)
    mic = track(me, lk_models.TrackSource.MICROPHONE)
    assert mic is not None
    assert not mic.muted
    assert await browser.text("#mute") == "Mute"
    # The transcript kept every line through it all.
    assert (await transcript_lines(browser))[: len(before)] == before

    # The room is deleted on the call server: the page says so and offers Reconnect (no automatic
    # rejoin: someone closed it on purpose), which opens a new room with the agent dispatched again.
    await delete_room(mesh, conversation_id)
    await browser.wait("#reconnect", timeout_ms=10_000)
    assert "room was closed on the call server" in await browser.text("#call-notice")
    assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
    await screens.take(browser, "room-deleted")
    await browser.click("#reconnect")
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    await browser.wait("#participants li[data-kind=agent]", timeout_ms=20_000)
    assert await browser.evaluate("() => document.querySelector('#call-notice').hidden") is True
    await screens.take(browser, "reopened-room")
