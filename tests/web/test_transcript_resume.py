"""The page's transcript survives a chat_svc restart: it resubscribes with `after_seq` and shows what
was said meanwhile, once, without doubling what it already had."""

from __future__ import annotations

import grpc
import pytest

from syntera.conversation.v1 import conversation_service_pb2 as cs
from syntera.conversation.v1 import resources_pb2 as res
from tests.support.identity import bearer, service_token
from tests.web.browser import Browser
from tests.web.conftest import WebMesh
from tests.web.test_call_page import (
    DEADLINE,
    sign_in_with_url_token,
    start_conversation,
    stub,
    wait_transcript_live,
)

pytestmark = [pytest.mark.mesh, pytest.mark.slow]

# Generous: chat_svc restarts as a new process, and the page backs off between attempts.
RESUME_TIMEOUT_MS = 30_000


async def test_transcript_resumes_after_chat_svc_restarts(
    browser: Browser, web_mesh: WebMesh, token: str
) -> None:
    await sign_in_with_url_token(browser, web_mesh, token)
    conversation_id = await start_conversation(browser, "VOICE", "resume after restart")
    async with grpc.aio.insecure_channel(web_mesh.chat_addr) as channel:
        await wait_transcript_live(browser, channel, conversation_id, token)

    web_mesh.mesh.restart("chat_svc")

    async with grpc.aio.insecure_channel(web_mesh.chat_addr) as channel:
        reply = await stub(channel).ReportTranscript(
            cs.ReportTranscriptRequest(
                conversation_id=conversation_id,
                segments=[
                    res.TranscriptSegment(
                        segment_id="after-restart", role=res.ROLE_AGENT, text="Still here.", final=True
                    )
                ],
            ),
            metadata=bearer(service_token("voice-worker")),
            timeout=DEADLINE,
        )
    seq = reply.results[0].seq
    await browser.wait(f"#transcript li[data-seq='{seq}'][data-final=true]", timeout_ms=RESUME_TIMEOUT_MS)
    texts = await browser.evaluate(
        "() => [...document.querySelectorAll('#transcript li .text')].map(e => e.textContent)"
    )
    assert texts == ["(sync)", "Still here."]
    assert await browser.attribute("#transcript", "data-watch") == "live"
