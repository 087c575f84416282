"""The call page in a real headless Chromium against a real mesh (store, agent_svc, chat_svc, Envoy).

Every request of the page goes through Envoy over gRPC-web; the tests check the outcome through the
API (direct gRPC to chat_svc), and play the voice worker by reporting transcripts with a service token.
The mesh's LiveKit server is real and the page joins its rooms; tests taking `livekit_unreachable`
run with that server killed, so joining fails as against any unreachable call server, and the page
must say so and keep working. (What happens inside a joined call is for the in-call tests.)
"""

from __future__ import annotations

import time
import uuid

import grpc
import httpx
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as cs
from syntera.conversation.v1 import conversation_service_pb2_grpc as cs_grpc
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.identity import bearer, service_token, user_token
from tests.web.browser import Browser
from tests.web.conftest import Screens, WebMesh

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

DEADLINE = 10.0
# The promise: a reported segment is on the page within a second.
LIVE_WITHIN_MS = 1000


async def sign_in_with_url_token(browser: Browser, web_mesh: WebMesh, token: str) -> None:
    await browser.goto(f"{web_mesh.page_url}/?token={token}")
    await browser.wait("body[data-signed-in=true][data-agents-loaded]", state="attached")
    # The page took the token out of the address bar (and history).
    assert "token=" not in await browser.evaluate("() => location.href")


async def start_conversation(browser: Browser, channel: str, title: str) -> str:
    """Starts a conversation from the page; returns its id once the page has it open."""
    await browser.fill("#title-input", title)
    await browser.click(f"#create-form button[data-channel={channel}]")
    await browser.wait("#conversation[data-conversation-id]")
    conversation_id = await browser.attribute("#conversation", "data-conversation-id")
    assert conversation_id
    return conversation_id


def stub(channel: grpc.aio.Channel) -> cs_grpc.ConversationServiceAsyncStub:
    return cs_grpc.ConversationServiceStub(channel)


async def wait_transcript_live(
    browser: Browser, channel: grpc.aio.Channel, conversation_id: str, token: str
) -> None:
    """Proves the page's WatchConversation stream delivers: a message written through the API shows up.

    (The stream sends nothing before its first event, so the page cannot tell "subscribed" earlier.)
    """
    await stub(channel).SendMessage(
        cs.SendMessageRequest(conversation_id=conversation_id, text="(sync)", request_id="sync"),
        metadata=bearer(token),
        timeout=DEADLINE,
    )
    await browser.wait_for(
        "() => [...document.querySelectorAll('#transcript li .text')].some(e => e.textContent === '(sync)')"
    )
    assert await browser.attribute("#transcript", "data-watch") == "live"


async def test_page_signs_in_and_starts_a_voice_call_while_livekit_is_unreachable(
    browser: Browser,
    web_mesh: WebMesh,
    livekit_unreachable: str,
    chat_channel: grpc.aio.Channel,
    token: str,
    user_id: str,
) -> None:
    # Sign in the way the README says: paste the token.
    await browser.goto(web_mesh.page_url)
    await browser.wait("#sign-in")
    await browser.fill("#token-input", f"Bearer {token}")
    await browser.click("#sign-in-form button[type=submit]")
    await browser.wait("body[data-signed-in=true][data-agents-loaded]", state="attached")
    assert user_id in await browser.text("#signed-in-as")
    agents = await browser.evaluate(
        "() => [...document.querySelectorAll('#agent-select option')].map(o => o.value)"
    )
    assert "default" in agents  # the built-in profile agent_svc seeds, listed through gRPC-web

    conversation_id = await start_conversation(browser, "VOICE", "voice from the browser")

    # LiveKit cannot be joined: the page says so plainly, and the badge says disconnected.
    await browser.wait("#call-notice")
    notice = await browser.text("#call-notice")
    assert "Cannot reach the call server (LiveKit)" in notice
    assert livekit_unreachable in notice
    assert "transcript and text chat below keep working" in notice
    assert await browser.attribute("#livekit-status", "data-state") in {"disconnected", "connecting"}
    # ... and the rest of the page keeps working: the transcript stream is live, the text box enabled.
    await wait_transcript_live(browser, chat_channel, conversation_id, token)
    assert await browser.evaluate("() => document.querySelector('#message-input').disabled") is False
    assert await browser.text("#conversation-channel") == "voice"
    assert not await browser.evaluate("() => document.querySelector('#error-banner').hidden === false")

    reply = await stub(chat_channel).GetConversation(
        cs.GetConversationRequest(conversation_id=conversation_id), metadata=bearer(token), timeout=DEADLINE
    )
    assert reply.conversation.channel == res.CHANNEL_VOICE
    assert reply.conversation.status == res.CONVERSATION_STATUS_ACTIVE
    assert reply.conversation.user_id == user_id
    assert reply.conversation.title == "voice from the browser"
    # The conversation list shows it too.
    await browser.wait(f"#conversation-list li[data-conversation-id='{conversation_id}']")
    page_errors = [line for line in await browser.console() if line.startswith("pageerror")]
    assert page_errors == []


async def test_reported_transcript_appears_live_interim_then_final(
    browser: Browser, web_mesh: WebMesh, chat_channel: grpc.aio.Channel, token: str
) -> None:
    await sign_in_with_url_token(browser, web_mesh, token)
    conversation_id = await start_conversation(browser, "VOICE", "live transcript")
    await wait_transcript_live(browser, chat_channel, conversation_id, token)
    worker = stub(chat_channel)
    worker_auth = bearer(service_token("voice-worker"))

    async def report(segment: res.TranscriptSegment) -> int:
        reply = await worker.ReportTranscript(
            cs.ReportTranscriptRequest(conversation_id=conversation_id, segments=[segment]),
            metadata=worker_auth,
            timeout=DEADLINE,
        )
        return reply.results[0].seq

    started = time.monotonic()
    seq = await report(res.TranscriptSegment(segment_id="turn-1", role=res.ROLE_USER, text="I need to chan"))
    line = f"#transcript li[data-seq='{seq}']"
    await browser.wait(f"{line}[data-final=false]", timeout_ms=LIVE_WITHIN_MS)
    interim_ms = (time.monotonic() - started) * 1000
    assert "I need to chan" in await browser.text(line)
    assert await browser.evaluate(f"() => document.querySelector(\"{line}\").classList.contains('interim')")

    started = time.monotonic()
    final_seq = await report(
        res.TranscriptSegment(
            segment_id="turn-1", role=res.ROLE_USER, text="I need to change my booking", final=True
        )
    )
    assert final_seq == seq
    await browser.wait(f"{line}[data-final=true]", timeout_ms=LIVE_WITHIN_MS)
    final_ms = (time.monotonic() - started) * 1000
    assert (await browser.text(f"{line} .text")) == "I need to change my booking"
    # Replaced in place: still one line for the turn (next to the sync message).
    assert await browser.evaluate("() => document.querySelectorAll('#transcript li').length") == 2

    # An agent turn cut off by the user is kept and marked.
    agent_seq = await report(
        res.TranscriptSegment(
            segment_id="turn-2", role=res.ROLE_AGENT, text="Sure, which booking", final=True, interrupted=True
        )
    )
    agent_line = f"#transcript li[data-seq='{agent_seq}']"
    await browser.wait(f"{agent_line}[data-interrupted=true][data-role=agent]", timeout_ms=LIVE_WITHIN_MS)
    assert "interrupted" in await browser.text(f"{agent_line} .interrupted-mark")
    print(f"transcript on page after report: interim {interim_ms:.0f} ms, final {final_ms:.0f} ms")


async def test_typed_message_is_stored(
    browser: Browser, web_mesh: WebMesh, chat_channel: grpc.aio.Channel, token: str, user_id: str
) -> None:
    await sign_in_with_url_token(browser, web_mesh, token)
    conversation_id = await start_conversation(browser, "VOICE", "typing during a call")

    await browser.fill("#message-input", "Can you hear me? Typing instead.")
    await browser.press_enter("#message-input")
    await browser.wait("#transcript li[data-role=user][data-final=true]")
    assert await browser.evaluate("() => document.querySelector('#message-input').value") == ""

    reply = await stub(chat_channel).ListMessages(
        cs.ListMessagesRequest(conversation_id=conversation_id), metadata=bearer(token), timeout=DEADLINE
    )
    assert [(m.text, m.role, m.source, m.sender_id) for m in reply.messages] == [
        ("Can you hear me? Typing instead.", res.ROLE_USER, res.MESSAGE_SOURCE_TEXT, user_id)
    ]
    assert "Can you hear me? Typing instead." in await browser.text("#transcript")


async def test_hang_up_ends_the_conversation(
    browser: Browser, web_mesh: WebMesh, chat_channel: grpc.aio.Channel, token: str
) -> None:
    await sign_in_with_url_token(browser, web_mesh, token)
    conversation_id = await start_conversation(browser, "VIDEO", "video to hang up")
    # Video calls offer the camera and screen share controls (disabled until LiveKit is joined).
    await browser.wait("#camera", state="visible")
    await browser.wait("#screen-share", state="visible")

    await browser.click("#hang-up")
    await browser.wait("#conversation[data-status=ended]", state="attached")
    assert await browser.attribute("#livekit-status", "data-state") == "disconnected"
    assert await browser.evaluate("() => document.querySelector('#message-input').disabled") is True

    reply = await stub(chat_channel).GetConversation(
        cs.GetConversationRequest(conversation_id=conversation_id), metadata=bearer(token), timeout=DEADLINE
    )
    assert reply.conversation.status == res.CONVERSATION_STATUS_ENDED
    await browser.wait(f"#conversation-list li[data-conversation-id='{conversation_id}'][data-status=ended]")


async def test_a_call_opened_from_the_list_gets_a_fresh_livekit_token(
    browser: Browser, web_mesh: WebMesh, livekit_unreachable: str, chat_channel: grpc.aio.Channel, token: str
) -> None:
    created = await stub(chat_channel).CreateConversation(
        cs.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_VOICE, title="made elsewhere"),
        metadata=bearer(token),
        timeout=DEADLINE,
    )
    conversation_id = created.conversation.conversation_id
    await sign_in_with_url_token(browser, web_mesh, token)
    item = f"#conversation-list li[data-conversation-id='{conversation_id}'] button"
    await browser.click(item)
    await browser.wait(f"#conversation[data-conversation-id='{conversation_id}']", state="attached")
    # No join info came with the list: the page asked LiveKitService.GenerateToken (through gRPC-web)
    # and tried the URL it returned (killed here, so the notice names it); a token error would have
    # been a different notice.
    await browser.wait("#call-notice")
    assert livekit_unreachable in await browser.text("#call-notice")
    assert await browser.evaluate("() => document.querySelector('#error-banner').hidden") is True


async def test_requests_from_an_origin_that_is_not_allowed_are_refused(
    browser: Browser, web_mesh: WebMesh, token: str
) -> None:
    envoy_url = web_mesh.mesh.envoy_url
    assert envoy_url is not None
    # The same page on another origin: the browser refuses to hand it Envoy's answers.
    await browser.goto(f"{web_mesh.foreign_page_url}/?token={token}")
    await browser.wait("#error-banner")
    assert "Cannot reach the Syntera API" in await browser.text("#error-banner")
    outcome = await browser.evaluate(
        """async (url) => {
            try {
                await fetch(url + '/syntera.agent.v1.AgentService/ListAgents', {
                    method: 'POST',
                    headers: {'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1'},
                    body: new Uint8Array([0, 0, 0, 0, 0]),
                });
                return 'allowed';
            } catch (error) {
                return 'refused: ' + error.name;
            }
        }""",
        envoy_url,
    )
    assert outcome == "refused: TypeError"

    # What Envoy answers a preflight: the allowed origin gets the CORS headers, the other none.
    async with httpx.AsyncClient(base_url=envoy_url, timeout=DEADLINE) as http:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        }
        path = "/syntera.agent.v1.AgentService/ListAgents"
        allowed = await http.options(path, headers={"origin": web_mesh.page_url, **preflight})
        refused = await http.options(path, headers={"origin": web_mesh.foreign_page_url, **preflight})
    assert allowed.headers.get("access-control-allow-origin") == web_mesh.page_url
    assert "authorization" in allowed.headers.get("access-control-allow-headers", "")
    assert "access-control-allow-origin" not in refused.headers


async def test_a_conversation_started_elsewhere_appears_in_the_list(
    browser: Browser, web_mesh: WebMesh, chat_channel: grpc.aio.Channel, token: str
) -> None:
    await sign_in_with_url_token(browser, web_mesh, token)
    await browser.wait("body[data-conversations-loaded='0']", state="attached")
    created = await stub(chat_channel).CreateConversation(
        cs.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_TEXT, title="from another tab"),
        metadata=bearer(token),
        timeout=DEADLINE,
    )
    # No reload: WatchConversations tells the page.
    item = f"#conversation-list li[data-conversation-id='{created.conversation.conversation_id}']"
    await browser.wait(item)
    assert "from another tab" in await browser.text(item)


async def test_links_to_missing_or_foreign_conversations_say_why_they_cannot_open(
    browser: Browser, web_mesh: WebMesh, chat_channel: grpc.aio.Channel, token: str, screens: Screens
) -> None:
    # A conversation that does not exist (deleted, or a mistyped link).
    missing = uuid.uuid4().hex
    await browser.goto(f"{web_mesh.page_url}/?token={token}&conversation={missing}")
    await browser.wait("#error-banner")
    assert await browser.text("#error-banner") == (
        f"Conversation {missing} was not found: it does not exist, or no longer does."
    )
    assert await browser.evaluate("() => document.querySelector('#conversation').hidden") is True
    # The link is dropped from the address, so a reload does not fail again.
    assert "conversation=" not in await browser.evaluate("() => location.href")
    await screens.take(browser, "not-found")

    # Someone else's conversation: refused, and said so.
    other = await stub(chat_channel).CreateConversation(
        cs.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_VOICE, title="not yours"),
        metadata=bearer(user_token(f"web-other-{uuid.uuid4().hex[:8]}")),
        timeout=DEADLINE,
    )
    foreign = other.conversation.conversation_id
    await browser.goto(f"{web_mesh.page_url}/?conversation={foreign}")
    await browser.wait_for(
        "(id) => document.querySelector('#error-banner').textContent.includes(id)", foreign
    )
    assert await browser.text("#error-banner") == (
        f"You may not open conversation {foreign}: it belongs to another user."
    )
    assert await browser.evaluate("() => document.querySelector('#conversation').hidden") is True
    await screens.take(browser, "not-yours")
    # The rest of the page works: the user's own (empty) list is there.
    assert await browser.attribute("body", "data-conversations-loaded") == "0"
