"""A LiveKit server stand-in that fails every server API call the way a real server never does on demand.

Every happy path, and every fault the real LiveKit server can be made to show, is tested against the
real server (`.tools/bin/livekit-server`): joins, room policy, dispatch, deletion, rejected keys
(a server with other keys), a server that is down (stopped), and a hung server (SIGSTOP) — see
tests/agent_svc/test_livekit_service.py. What is left for this stand-in is what a real LiveKit server
does not produce when asked: an overloaded or broken server's 5xx and 429 answers, a proxy's HTML
error page in front of it, and 4xx refusals our well-formed requests never cause.

Who uses it:

- tests/agent_svc/test_livekit_service.py, `test_livekit_failures_are_mapped` (in process): each
  `Fault` below must reach the caller as the documented status (UNAVAILABLE `LIVEKIT_UNAVAILABLE`,
  or INTERNAL `LIVEKIT_REQUEST_REJECTED`), with no credentials in it.
- tests/support/mesh.py launches it as a process in the real server's place for
  `mesh_factory(standin=True)`: `python -m tests.support.livekit_standin --port N --api-key K
  --api-secret S [--fault NAME]` (default `unavailable`).

It checks the bearer JWT of each call like LiveKit does (signed HS256 by the secret of the key in
`iss`, not expired; else 401 `unauthenticated`), so a fault test cannot pass on a credentials bug,
then answers `POST /twirp/livekit.<Service>/<Method>` with its fault. It records every call
("Service/Method") in `calls`. Never used by `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from dataclasses import dataclass

import jwt
from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """How the stand-in answers every server API call.

    Attributes:
        status: The HTTP status.
        twirp_code: The Twirp error code in a Twirp JSON body; None sends a proxy's HTML page instead.
    """

    status: int
    twirp_code: str | None

    def response(self) -> web.Response:
        if self.twirp_code is None:
            return web.Response(
                status=self.status, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        return web.json_response({"code": self.twirp_code, "msg": "stand-in fault"}, status=self.status)


FAULTS = {
    # An overloaded or restarting server.
    "unavailable": Fault(503, "unavailable"),
    "internal": Fault(500, "internal"),
    "resource_exhausted": Fault(429, "resource_exhausted"),
    # A reverse proxy in front of LiveKit whose upstream is gone: HTML, not Twirp JSON.
    "proxy_error_page": Fault(502, None),
    # A refusal our validated requests never cause against the real server.
    "invalid_argument": Fault(400, "invalid_argument"),
}


class LiveKitStandIn:
    """The stand-in. Use `async with LiveKitStandIn(key, secret, FAULTS["internal"]) as lk:` then `lk.url`."""

    def __init__(
        self, api_key: str, api_secret: str, fault: Fault, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.port = port
        self.fault = fault
        self._keys = {api_key: api_secret}
        self._runner: web.AppRunner | None = None
        # Every Twirp call received, as "Service/Method" (including rejected ones), for assertions.
        self.calls: list[str] = []

    @property
    def url(self) -> str:
        """The `ws://` URL to configure as LIVEKIT_URL (livekit-api maps it to http)."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> int:
        """Starts listening; returns the bound port (port 0 picks a free one)."""
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LiveKitStandIn:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _twirp(self, request: web.Request) -> web.Response:
        self.calls.append(f"{request.match_info['service']}/{request.match_info['method']}")
        if not self._authenticated(request.headers.get("Authorization", "")):
            return web.json_response({"code": "unauthenticated", "msg": "permissions denied"}, status=401)
        return self.fault.response()

    def _authenticated(self, header: str) -> bool:
        """Checks the bearer JWT the way LiveKit's auth middleware does (signature, key, expiry)."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            key = jwt.decode(token, options={"verify_signature": False}).get("iss")
            secret = self._keys.get(key) if isinstance(key, str) else None
            if secret is None:
                return False
            jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.InvalidTokenError:
            return False
        return True


async def _serve(args: argparse.Namespace) -> None:
    standin = LiveKitStandIn(
        args.api_key, args.api_secret, FAULTS[args.fault], host=args.host, port=args.port
    )
    port = await standin.start()
    print(json.dumps({"event": "livekit stand-in listening", "port": port, "fault": args.fault}), flush=True)  # noqa: T201
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--fault", choices=sorted(FAULTS), default="unavailable")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
