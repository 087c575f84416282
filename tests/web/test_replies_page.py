"""The page in a text conversation: the agent's reply grows on screen, and a failed one can be retried.

A real headless Chromium against a real mesh whose agent_svc uses the local OpenAI-compatible
stand-in (`devrun.llm_standin`) as its language model; directives in the typed text make it slow
or fail. Every request of the page goes through Envoy over gRPC-web.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devrun.llm_standin import standin_env, start_standin
from devrun.ports import free_port
from tests.support.mesh import StoreLike
from tests.web.browser import Browser
from tests.web.conftest import Screens, WebMesh, _running_web_mesh
from tests.web.test_call_page import sign_in_with_url_token, start_conversation

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(180)]

# Records every state of every agent line the page shows, as it shows it.
RECORD_REPLIES = """() => {
  window.__replyStates = [];
  const record = () => {
    for (const li of document.querySelectorAll('#transcript li[data-role=agent]')) {
      const text = li.querySelector('.text')?.textContent ?? '';
      const state = [li.dataset.seq, li.dataset.revision, li.dataset.replyState, text];
      const last = window.__replyStates[window.__replyStates.length - 1];
      if (!last || last.join('|') !== state.join('|')) window.__replyStates.push(state);
    }
  };
  const options = {subtree: true, childList: true, attributes: true};
  new MutationObserver(record).observe(document.querySelector('#transcript'), options);
  return true;
}"""


@pytest.fixture(scope="module")
def reply_web_mesh(
    store: StoreLike, built_page: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebMesh]:
    workdir = tmp_path_factory.mktemp("reply-web")
    port = free_port()
    standin = start_standin(port, workdir / "llm_standin.log")
    try:
        # The web suite's own helper: a mesh with the page served on an origin Envoy allows.
        with _running_web_mesh(store, workdir / "mesh", extra_env=standin_env(port)) as mesh:
            yield mesh
    finally:
        standin.stop()


async def _states(browser: Browser) -> list[list[Any]]:
    states: list[list[Any]] = await browser.evaluate("() => window.__replyStates")
    return states


async def test_the_reply_grows_on_the_page_and_a_failed_one_is_retried(
    browser: Browser, reply_web_mesh: WebMesh, token: str, screens: Screens
) -> None:
    await sign_in_with_url_token(browser, reply_web_mesh, token)
    await start_conversation(browser, "TEXT", "typed with the agent")
    await browser.evaluate(RECORD_REPLIES)

    await browser.fill("#message-input", "[words=30][pace=80] What can you do?")
    await browser.press_enter("#message-input")
    await browser.wait("#transcript li[data-role=agent][data-reply-state=generating]")
    await screens.take(browser, "growing")
    await browser.wait("#transcript li[data-role=agent][data-reply-state=complete]", timeout_ms=20_000)
    line = "#transcript li[data-role=agent][data-reply-state=complete]"
    assert await browser.attribute(line, "data-final") == "true"
    assert (await browser.text(f"{line} .reply-generator")) == "model: standin-model"
    text = await browser.text(f"{line} .text")
    assert len(text.split()) == 30
    # The page showed it growing: several revisions, each longer, while it was generating.
    growing = [s for s in await _states(browser) if s[2] == "generating" and s[3]]
    assert len(growing) >= 3, growing
    lengths = [len(s[3]) for s in growing]
    assert lengths == sorted(lengths)
    assert lengths[-1] < len(text)
    await screens.take(browser, "complete")

    await browser.fill("#message-input", "[error=500][times=2] Are you there?")
    await browser.press_enter("#message-input")
    failed = "#transcript li[data-role=agent][data-reply-state=failed]"
    await browser.wait(failed, timeout_ms=20_000)
    assert await browser.attribute(failed, "data-failure-reason") == "LLM_UNAVAILABLE"
    assert "could not be reached" in await browser.text(f"{failed} .reply-failed")
    seq = await browser.attribute(failed, "data-seq")
    await screens.take(browser, "failed")

    await browser.click(f"{failed} .reply-retry")
    retried = f"#transcript li[data-seq='{seq}'][data-reply-state=complete][data-attempt='2']"
    await browser.wait(retried, timeout_ms=20_000)
    assert await browser.evaluate(f'() => document.querySelectorAll("{retried} .reply-retry").length') == 0
    assert (await browser.text(f"{retried} .text")).startswith("Stand-in reply")
    # Retried in place: one line per message, no second reply.
    assert await browser.evaluate("() => document.querySelectorAll('#transcript li').length") == 4
    await screens.take(browser, "retried")
