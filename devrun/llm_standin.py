"""A local OpenAI-compatible streaming server: the language model's stand-in for tests and benchmarks.

`python -m devrun.llm_standin --port N` serves `POST /v1/chat/completions` with `stream: true` as
server-sent events, the way OpenAI, Ollama and llama.cpp do, so agent_svc and the voice worker use
it through `LLM_BASE_URL=http://127.0.0.1:N/v1` exactly as they would use a real one.

It is not a model: each reply is a fixed sentence quoting the last user message, padded with
numbered words. Directives in the last user message make it misbehave on purpose:

- `[words=N]`: the reply has N words (default 12); `[pace=MS]`: MS milliseconds between words
  (default 20).
- `[stall]`: answers 200 and then sends nothing; `[stall-after=N]`: stalls after N words.
- `[error=CODE]`: answers HTTP CODE (e.g. 500, 429, 400) with an OpenAI-style error body.
- `[drop-after=N]`: cuts the connection after N words, in the middle of the stream.
- `[times=N]`: the directives apply to the first N requests with this exact message only; later
  ones (a retry) get a normal reply. `[once]` is `[times=1]`. (LiveKit's LLM client itself tries
  a failed request once more when nothing was received yet: a 5xx needs `[times=2]` to be seen.)

A request whose system message starts with "You summarize" gets a one-sentence summary instead.
`GET /stats` says how many requests came, how many streams are open, and the last request's
messages (roles and texts); `POST /reset` clears that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from devrun.launch import ROOT, child_env
from devrun.ports import port_open
from devrun.processes import ManagedProcess

_DIRECTIVE = re.compile(r"\[(words|pace|stall|stall-after|error|drop-after|once|times)(?:=(\d+))?\]")
_DEFAULT_WORDS = 12
_DEFAULT_PACE_MS = 20
_SUMMARY_MARK = "You summarize"
MODEL = "standin-model"


@dataclass
class Behaviour:
    words: int = _DEFAULT_WORDS
    pace_ms: int = _DEFAULT_PACE_MS
    stall_after: int | None = None
    error: int | None = None
    drop_after: int | None = None
    times: int | None = None


def behaviour_of(text: str) -> Behaviour:
    found = Behaviour()
    for name, value in _DIRECTIVE.findall(text):
        number = int(value) if value else 0
        if name == "words":
            found.words = max(1, number)
        elif name == "pace":
            found.pace_ms = number
        elif name == "stall":
            found.stall_after = 0
        elif name == "stall-after":
            found.stall_after = number
        elif name == "error":
            found.error = number or 500
        elif name == "drop-after":
            found.drop_after = number
        elif name == "once":
            found.times = 1
        elif name == "times":
            found.times = max(1, number)
    return found


def reply_words(user_text: str, count: int, serial: int) -> list[str]:
    quoted = _DIRECTIVE.sub("", user_text).split()[:6]
    words = ["Stand-in", "reply", f"#{serial}", "to:", *quoted]
    words += [f"w{i}" for i in range(1, max(0, count - len(words)) + 1)]
    return [w if i == 0 else f" {w}" for i, w in enumerate(words[:count])]


@dataclass
class StandIn:
    """The server's state: counters, and how often each `[times=N]` message was asked already."""

    requests: int = 0
    open_streams: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    last_messages: list[list[str]] = field(default_factory=list)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages: list[Mapping[str, Any]] = body.get("messages") or []
        self.requests += 1
        serial = self.requests
        self.last_messages = [[str(m.get("role")), _text(m.get("content"))] for m in messages]
        system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
        user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        behaviour = behaviour_of(user)
        if behaviour.times is not None:
            self.seen[user] = self.seen.get(user, 0) + 1
            if self.seen[user] > behaviour.times:
                behaviour = Behaviour()
        if behaviour.error is not None:
            return web.json_response(
                {"error": {"message": "stand-in failure", "type": "server_error", "code": behaviour.error}},
                status=behaviour.error,
            )
        if system.startswith(_SUMMARY_MARK):
            words = reply_words(f"Summary: the caller talked about {user[:80]}", 10, serial)
        else:
            words = reply_words(user, behaviour.words, serial)
        if not body.get("stream"):
            return web.json_response(_completion(serial, "".join(words)))
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        self.open_streams += 1
        try:
            chunk_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            await _send(response, _chunk(chunk_id, {"role": "assistant", "content": ""}))
            for index, word in enumerate(words):
                if behaviour.stall_after is not None and index >= behaviour.stall_after:
                    await asyncio.sleep(3600)
                if behaviour.drop_after is not None and index >= behaviour.drop_after:
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if behaviour.pace_ms:
                    await asyncio.sleep(behaviour.pace_ms / 1000)
                await _send(response, _chunk(chunk_id, {"content": word}))
            await _send(response, _chunk(chunk_id, {}, finish="stop"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        finally:
            self.open_streams -= 1
        return response

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "open_streams": self.open_streams,
                "last_messages": self.last_messages,
            }
        )

    async def reset(self, _: web.Request) -> web.Response:
        self.requests = 0
        self.seen.clear()
        self.last_messages = []
        return web.json_response({})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _chunk(chunk_id: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(serial: int, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


def make_app() -> web.Application:
    state = StandIn()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.completions)
    app.router.add_get("/stats", state.stats)
    app.router.add_post("/reset", state.reset)
    return app


async def serve(host: str, port: int) -> None:
    # Handlers are cancelled when their client goes away, so `open_streams` shows a cancelled reply.
    runner = web.AppRunner(make_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"llm stand-in listening on http://{host}:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def start_standin(port: int, log_path: Path, cwd: Path = ROOT) -> ManagedProcess:
    """Runs the stand-in as its own process on 127.0.0.1:`port` until it listens.

    `LLM_BASE_URL=http://127.0.0.1:<port>/v1` and `LLM_MODEL=standin-model` point a service at it.
    """
    args = [sys.executable, "-m", "devrun.llm_standin", "--port", str(port)]
    proc = ManagedProcess("llm_standin", args, log_path, env=child_env({"PYTHONPATH": str(ROOT)}), cwd=cwd)
    proc.start()
    try:
        proc.wait_until(lambda: port_open("127.0.0.1", port), 30.0, "listening")
    except BaseException:
        proc.stop()
        raise
    return proc


def standin_env(port: int) -> dict[str, str]:
    """The environment that points agent_svc (and the voice worker) at a stand-in on `port`."""
    return {"LLM_BASE_URL": f"http://127.0.0.1:{port}/v1", "LLM_MODEL": MODEL, "LLM_API_KEY": "standin"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devrun.llm_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    try:
        asyncio.run(serve(options.host, options.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
