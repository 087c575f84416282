"""A webhook relay between the LiveKit server and Envoy, so a test can see and lose webhooks.

The mesh's LiveKit server is pointed at the relay (`webhook_url`); the relay keeps a copy of every
webhook exactly as it came (body bytes and `Authorization` header) and forwards it to Envoy's
`/api/livekit/webhook`, answering LiveKit with Envoy's answer. Events whose type is in `drop` are
answered 200 and not forwarded: lost on purpose, as a webhook lost on the way would be.

It runs on its own thread, so a test that blocks its event loop (starting or killing a process)
does not hold up the server's webhooks.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

WEBHOOK_PATH = "/api/livekit/webhook"


@dataclass(frozen=True)
class Delivery:
    """One webhook as the server sent it, and what became of it."""

    body: bytes
    authorization: str
    forwarded_status: int | None

    @property
    def event(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


@dataclass
class WebhookRelay:
    target: str = ""
    drop: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{WEBHOOK_PATH}"

    def __enter__(self) -> WebhookRelay:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                relay.handle(self, body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - overrides
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhook-relay", daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        authorization = handler.headers.get("authorization") or ""
        event = str(json.loads(body).get("event", ""))
        status: int | None = None
        if event not in self.drop and self.target:
            status = forward(self.target, body, authorization)
        with self._lock:
            self.deliveries.append(Delivery(body, authorization, status))
        # Not configured yet: make LiveKit try again, as an unreachable edge would.
        answer = status if status is not None else (200 if event in self.drop else 503)
        handler.send_response(answer)
        handler.send_header("content-length", "0")
        handler.end_headers()

    def received(self, event: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.event.get("event") == event]


def forward(url: str, body: bytes, authorization: str, content_type: str = "application/webhook+json") -> int:
    """POSTs a webhook and returns the HTTP status."""
    headers = {"content-type": content_type}
    if authorization:
        headers["authorization"] = authorization
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
