"""A video call from the page in Chromium against the real LiveKit server: the fake camera publishes
with a local preview, and the screen is shared and unshared (a video call's token allows both).

The voice call's half of screen sharing, refused with a reason, is in test_live_call.
"""

from __future__ import annotations

import httpx
import pytest
from livekit.protocol import models as lk_models

from tests.support.identity import bearer
from tests.web.browser import Browser, BrowserOptions
from tests.web.calls import participant, track, until
from tests.web.conftest import LaunchBrowser, Screens, WebMesh
from tests.web.test_call_page import sign_in_with_url_token, start_conversation

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(120)]


async def preview_playing(browser: Browser, source: str) -> bool:
    """The page shows a local preview of `source` (camera, screen_share) with frames in it."""
    return bool(
        await browser.evaluate(
            """(source) => {
                const video = document.querySelector(`#media video[data-local=true][data-source=${source}]`);
                return !!video && !video.paused && video.videoWidth > 0 && video.videoHeight > 0;
            }""",
            source,
        )
    )


async def test_video_call_publishes_the_camera_with_a_preview_and_shares_the_screen(
    web_mesh: WebMesh, launch_browser: LaunchBrowser, screens: Screens, token: str, user_id: str
) -> None:
    browser = await launch_browser(BrowserOptions())
    await sign_in_with_url_token(browser, web_mesh, token)
    conversation_id = await start_conversation(browser, "VIDEO", "face to face")
    await browser.wait("#livekit-status[data-state=connected]", state="attached", timeout_ms=15_000)
    mesh = web_mesh.mesh

    async def published(source: lk_models.TrackSource, *, muted: bool = False) -> bool:
        info = track(await participant(mesh, conversation_id, user_id), source)
        return info is not None and info.muted == muted

    # The camera publishes as the call starts; the server sees the track, and the page shows it.
    await until(lambda: published(lk_models.TrackSource.CAMERA), "the server seeing the camera track")
    await browser.wait_for(
        "() => { const v = document.querySelector('#media video[data-local=true][data-source=camera]');"
        " return !!v && v.videoWidth > 0; }"
    )
    assert await preview_playing(browser, "camera")
    assert await browser.text("#camera") == "Camera off"
    # Our own API (REST through Envoy, as a script would ask) lists the camera among what the caller
    # publishes, once its frames arrive.
    assert mesh.envoy_url is not None
    async with httpx.AsyncClient(base_url=mesh.envoy_url, timeout=10) as http:

        async def listed() -> bool:
            reply = await http.get(
                f"/api/livekit/room/{conversation_id}/participants", headers=dict(bearer(token))
            )
            assert reply.status_code == 200, reply.text
            me = [p for p in reply.json()["participants"] if p["identity"] == user_id]
            return bool(me) and "TRACK_SOURCE_CAMERA" in me[0].get("publishedSources", [])

        await until(listed, "ListParticipants showing the camera")
    await screens.take(browser, "camera-on")

    # Camera off: the track stays published, muted, as the server reports; on again: unmuted.
    await browser.click("#camera")
    await until(lambda: published(lk_models.TrackSource.CAMERA, muted=True), "the camera track muted")
    assert await browser.text("#camera") == "Camera on"
    await screens.take(browser, "camera-off")
    await browser.click("#camera")
    await until(lambda: published(lk_models.TrackSource.CAMERA), "the camera track unmuted")

    # Share the screen: the server sees a screen-share track, the page previews it.
    await browser.click("#screen-share")
    await until(lambda: published(lk_models.TrackSource.SCREEN_SHARE), "the server seeing the screen share")
    await browser.wait_for(
        "() => { const v = document.querySelector('#media video[data-local=true][data-source=screen_share]');"
        " return !!v && v.videoWidth > 0; }"
    )
    assert await preview_playing(browser, "screen_share")
    assert await browser.text("#screen-share") == "Stop sharing"
    assert await browser.evaluate("() => document.querySelector('#call-notice').hidden") is True
    await screens.take(browser, "sharing-screen")

    # Stop sharing: the track is gone from the server and from the page; the camera goes on.
    await browser.click("#screen-share")

    async def share_gone() -> bool:
        return (
            track(await participant(mesh, conversation_id, user_id), lk_models.TrackSource.SCREEN_SHARE)
            is None
        )

    await until(share_gone, "the screen share unpublished")
    await browser.wait("#media video[data-local=true][data-source=screen_share]", state="detached")
    assert await browser.text("#screen-share") == "Share screen"
    assert await preview_playing(browser, "camera")
    await screens.take(browser, "sharing-stopped")
