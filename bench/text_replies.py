"""Agent replies in text conversations, as a user waits for them: 20 conversations at once.

`python -m bench.text_replies [--conversations 20] [--messages 5] [--words 30] [--pace-ms 20]`

Starts its own mesh (store, LiveKit server, agent_svc, chat_svc, Envoy) at `make run`'s INFO log
level, then runs the load generator in a process of its own. Each simulated user creates a TEXT
conversation through Envoy, watches it through Envoy, and sends `--messages` messages one after
another, each when the previous reply is final. Per message it measures, from the moment
SendMessage is called:

- first token: the watch delivers the reply with its first text (what the page shows first);
- final: the watch delivers the reply COMPLETE (or FAILED: counted as an error).

Two generators, one after the other on the same mesh (agent_svc restarted between them):
- the scripted offline responder (`make run`'s default without LLM_BASE_URL): no model time;
- a local OpenAI-compatible stand-in (`devrun.llm_standin`) streaming `--words` words,
  `--pace-ms` apart: the model itself takes words x pace to its last word, so the rest is ours.

The clients speak native gRPC to Envoy's listener (the page's gRPC-web takes the same routes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from bench.stats import percentile
from devrun.launch import ROOT
from devrun.llm_standin import standin_env, start_standin
from devrun.mesh import AGENT_SVC, start_mesh
from devrun.ports import free_port
from devrun.store import EmbeddedStore
from servicekit import auth
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as res

JWT_SECRET = "bench-only-jwt-secret-0123456789abcdef-0123456789"  # noqa: S105 - loopback benchmark
REPLY_WITHIN_SECONDS = 60.0


@dataclass
class Figures:
    """What the load generator measured (seconds)."""

    first_token: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    send: list[float] = field(default_factory=list)
    errors: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    elapsed: float = 0.0


# -- the load generator (its own process) ---------------------------------------------------------


class _Waiter:
    """One conversation's watch: when each reply (by the user seq it answers) showed text, and ended.

    Kept for every reply, not only the awaited one: a reply can grow, even end, on the watch before
    SendMessage has answered with the user message's seq.
    """

    def __init__(self) -> None:
        self.first_text: dict[int, float] = {}
        self.final: dict[int, tuple[res.Message, float]] = {}
        self.changed = asyncio.Event()
        self.live = asyncio.Event()

    def on_message(self, message: res.Message) -> None:
        if not message.HasField("reply"):
            return
        to_seq = message.reply.in_reply_to_seq
        now = time.perf_counter()
        if message.text:
            self.first_text.setdefault(to_seq, now)
        if message.final and to_seq not in self.final:
            self.final[to_seq] = (message, now)
            self.changed.set()


async def _user(
    stub: api_grpc.ConversationServiceAsyncStub, user: str, messages: int, text: str, figures: Figures
) -> None:
    metadata = (("authorization", f"Bearer {auth.mint(JWT_SECRET, user)}"),)
    created = await stub.CreateConversation(
        api.CreateConversationRequest(
            agent_id="default", channel=res.CHANNEL_TEXT, request_id=uuid.uuid4().hex
        ),
        metadata=metadata,
        timeout=30,
    )
    conversation_id = created.conversation.conversation_id
    waiter = _Waiter()
    call = stub.WatchConversation(
        api.WatchConversationRequest(conversation_id=conversation_id), metadata=metadata, timeout=600
    )

    async def watch() -> None:
        async for event in call:
            if event.HasField("keep_alive"):
                waiter.live.set()
            elif event.HasField("message"):
                waiter.on_message(event.message)

    watching = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(waiter.live.wait(), 30)
        for n in range(messages):
            started = time.perf_counter()
            sent = await stub.SendMessage(
                api.SendMessageRequest(
                    conversation_id=conversation_id,
                    text=f"{text} (question {n})",
                    request_id=uuid.uuid4().hex,
                ),
                metadata=metadata,
                timeout=30,
            )
            figures.send.append(time.perf_counter() - started)
            seq = sent.message.seq
            try:
                async with asyncio.timeout(REPLY_WITHIN_SECONDS):
                    while seq not in waiter.final:
                        waiter.changed.clear()
                        await waiter.changed.wait()
            except TimeoutError:
                figures.errors += 1
                figures.failure_reasons.append("NO_FINAL_REPLY")
                continue
            final, final_at = waiter.final[seq]
            first_text = waiter.first_text.get(seq)
            if final.reply.state != res.REPLY_STATE_COMPLETE or first_text is None:
                figures.errors += 1
                figures.failure_reasons.append(
                    final.reply.failure_reason or res.ReplyState.Name(final.reply.state)
                )
                continue
            figures.first_token.append(first_text - started)
            figures.final.append(final_at - started)
    finally:
        call.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def _ready(stub: api_grpc.ConversationServiceAsyncStub, within: float = 30.0) -> None:
    """Waits until a conversation can be created (chat_svc reaches a just restarted agent_svc)."""
    metadata = (("authorization", f"Bearer {auth.mint(JWT_SECRET, 'bench-probe')}"),)
    deadline = time.monotonic() + within
    while True:
        try:
            await stub.CreateConversation(
                api.CreateConversationRequest(agent_id="default", channel=res.CHANNEL_TEXT),
                metadata=metadata,
                timeout=5,
            )
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _load(target: str, conversations: int, messages: int, text: str) -> Figures:
    figures = Figures()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        await _ready(stub)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                _user(stub, f"bench-{n}-{uuid.uuid4().hex[:6]}", messages, text, figures)
                for n in range(conversations)
            ),
            return_exceptions=True,
        )
        figures.elapsed = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            figures.errors += messages
            figures.failure_reasons.append(type(outcome).__name__)
    return figures


def _run_load_process(target: str, conversations: int, messages: int, text: str) -> Figures:
    """Runs the load generator as its own process (it does not share the benchmark's CPU time slices)."""
    done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "bench.text_replies",
            "--load-target",
            target,
            "--conversations",
            str(conversations),
            "--messages",
            str(messages),
            "--text",
            text,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Figures(**json.loads(done.stdout.strip().splitlines()[-1]))


# -- the benchmark ------------------------------------------------------------------------------


def _row(name: str, figures: Figures) -> str:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:8.0f}" if values else f"{'-':>8}"

    return (
        f"{name:<34} {len(figures.final):>7} {figures.errors:>6} "
        f"{ms(figures.first_token, 50)} {ms(figures.first_token, 99)} "
        f"{ms(figures.final, 50)} {ms(figures.final, 99)} {ms(figures.send, 50)} {ms(figures.send, 99)}"
    )


def run(conversations: int, messages: int, words: int, pace_ms: int) -> int:
    header = (
        f"{'generator':<34} {'replies':>7} {'errors':>6} {'1st p50':>8} {'1st p99':>8} "
        f"{'end p50':>8} {'end p99':>8} {'send p50':>8} {'send p99':>8}"
    )
    print(
        f"text_replies: {conversations} conversations at once, {messages} messages each, sent when the "
        "previous reply is final; through Envoy (native gRPC); services at INFO log level\n"
        "times in ms from calling SendMessage: 1st = the watch shows the reply's first text, "
        "end = it shows the reply COMPLETE; send = SendMessage itself\n",
        flush=True,
    )
    failed = 0
    with tempfile.TemporaryDirectory(prefix="text-replies-bench-") as folder:
        base = Path(folder)
        store = EmbeddedStore(base / "store", base / "store.log")
        store.start()
        standin_port = free_port()
        standin = start_standin(standin_port, base / "logs" / "llm_standin.log")
        try:
            mesh = start_mesh(store, base / "mesh", jwt_secret=JWT_SECRET, database="bench", log_level="INFO")
            try:
                assert mesh.envoy_addr is not None
                print(header)
                print("-" * len(header), flush=True)
                scripted = _run_load_process(
                    mesh.envoy_addr, conversations, messages, "Hello, what can you do?"
                )
                print(_row("scripted responder", scripted), flush=True)
                mesh.stop(AGENT_SVC)
                mesh.start(AGENT_SVC, extra_env=standin_env(standin_port))
                model = _run_load_process(
                    mesh.envoy_addr,
                    conversations,
                    messages,
                    f"[words={words}][pace={pace_ms}] Hello, what can you do?",
                )
                print(_row(f"stand-in model ({words} words/{pace_ms} ms)", model), flush=True)
            finally:
                mesh.close()
        finally:
            standin.stop()
            store.stop()
    for name, figures in (("scripted responder", scripted), ("stand-in model", model)):
        if figures.errors:
            failed += 1
            print(f"{name}: {figures.errors} replies failed: {sorted(set(figures.failure_reasons))}")
    print(
        f"\nthe stand-in model itself: first word at once, last word after {words} x {pace_ms} ms = "
        f"{words * pace_ms} ms; wall time {scripted.elapsed:.1f} s (scripted), {model.elapsed:.1f} s (model)"
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--words", type=int, default=30, help="stand-in reply length in words")
    parser.add_argument("--pace-ms", type=int, default=20, help="stand-in milliseconds between words")
    parser.add_argument("--load-target", default="", help=argparse.SUPPRESS)
    parser.add_argument("--text", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_target:
        figures = asyncio.run(_load(args.load_target, args.conversations, args.messages, args.text))
        print(json.dumps(asdict(figures)))
        return 0
    return run(args.conversations, args.messages, args.words, args.pace_ms)


if __name__ == "__main__":
    sys.exit(main())
