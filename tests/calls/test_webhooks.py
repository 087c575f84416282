"""LiveKit webhooks through Envoy: verified on the exact bytes, refused when forged, once when replayed.

The real LiveKit server sends its webhooks through a relay (tests/calls/relay.py) that keeps a copy
of each, so the test can replay what the server really sent; forgeries are built from them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import httpx
import jwt
import pytest

from devrun.caller import Caller
from devrun.livekit_server import webhook_endpoint
from syntera.conversation.v1 import resources_pb2 as conv_res
from tests.calls.relay import WebhookRelay
from tests.calls.support import get_conversation, wait_for_conversation
from tests.support.identity import user_token
from tests.support.mesh import Mesh, MeshFactory
from tests.voice.real_call import new_call, wait_for

pytestmark = [pytest.mark.mesh, pytest.mark.slow, pytest.mark.timeout(180)]


def sign(body: bytes, key: str, secret: str, *, valid_for: int = 300) -> str:
    """A webhook signature as the LiveKit server makes it: a JWT from `key` with the body's hash."""
    now = int(time.time())
    claims = {
        "iss": key,
        "nbf": min(now, now + valid_for - 60),
        "exp": now + valid_for,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def post(mesh: Mesh, body: bytes, authorization: str | None) -> httpx.Response:
    assert mesh.envoy_url is not None
    headers = {"content-type": "application/webhook+json"}
    if authorization is not None:
        headers["authorization"] = authorization
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(webhook_endpoint(mesh.envoy_url), content=body, headers=headers)


def reason(response: httpx.Response) -> str:
    details = response.json().get("details") or [{}]
    return str(details[0].get("reason", ""))


async def test_forged_webhooks_are_refused_and_replays_recorded_once(mesh_factory: MeshFactory) -> None:
    with WebhookRelay() as relay:
        mesh = mesh_factory(webhook_url=relay.url)
        assert mesh.envoy_url is not None
        relay.target = webhook_endpoint(mesh.envoy_url)
        key, secret = mesh.livekit.api_key, mesh.livekit.api_secret
        join = await new_call(mesh)
        async with Caller() as caller:
            await caller.join(join.url, join.token)
            active = await wait_for_conversation(
                mesh, join.conversation_id, lambda c: c.call.state == conv_res.CALL_STATE_ACTIVE, within=30
            )
            # Everything the server sent so far went through and was accepted.
            await wait_for(
                lambda: _true(relay.received("participant_joined")), "participant_joined", within=10
            )
            assert all(d.forwarded_status == 200 for d in relay.deliveries)
            (joined,) = relay.received("participant_joined")

            # A replay of what the server really sent: acknowledged, recorded once.
            replayed = await post(mesh, joined.body, joined.authorization)
            assert replayed.status_code == 200, replayed.text
            assert replayed.json() == {
                "eventId": joined.event["id"],
                "event": "participant_joined",
                "duplicate": True,
            }

            # A new event, as the server would send it: the user left. Every forgery of it is refused.
            event = dict(joined.event) | {"event": "participant_left", "id": "EV_forgery_test_1"}
            body = json.dumps(event).encode()
            forgeries = {
                "another secret": (body, sign(body, key, "x" * 48)),
                "another key": (body, sign(body, "APIsomeoneelse", secret)),
                "expired": (body, sign(body, key, secret, valid_for=-120)),
                "body changed after signing": (body, sign(body.replace(b"}", b" }", 1), key, secret)),
                "no signature": (body, None),
                "a user's bearer token": (body, f"Bearer {user_token('alice')}"),
                "not a token": (body, "not-a-jwt"),
            }
            for what, (sent, authorization) in forgeries.items():
                refused = await post(mesh, sent, authorization)
                assert refused.status_code == 401, (what, refused.text)
                assert reason(refused).startswith("WEBHOOK_"), (what, refused.text)
                assert refused.json()["code"] == 16, what

            after = await get_conversation(mesh, join.conversation_id)
            assert after.call == active.call  # nothing was recorded
            # Signed properly, the same event is news: the forgeries left no trace of its id.
            accepted = await post(mesh, body, sign(body, key, secret))
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["duplicate"] is False
            # (chat_svc hears of it right after the webhook is answered.)
            moved = await wait_for_conversation(
                mesh, join.conversation_id, lambda c: c.call.revision > active.call.revision, within=10
            )
            assert moved.call.state == conv_res.CALL_STATE_WAITING


async def test_a_signed_body_that_is_not_a_webhook_names_the_body(mesh_factory: MeshFactory) -> None:
    mesh = mesh_factory()
    body = b'{"event": 42}'
    refused = await post(mesh, body, sign(body, mesh.livekit.api_key, mesh.livekit.api_secret))
    assert refused.status_code == 400, refused.text
    violations = [d for d in refused.json()["details"] if "fieldViolations" in d]
    assert violations[0]["fieldViolations"][0]["field"] == "body"


async def _true(value: object) -> bool:
    return bool(value)
