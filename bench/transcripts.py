"""Live transcripts on the user's path: the worker reports a turn, the page's watch stream shows it.

What is measured, per run (20 and 100 calls by default, 4 segments a second each, 10 s):

- **Reports** go the way the voice worker sends them: each call has its own outbox file, an
  `OutboxSender` and a `ChatTranscriptSink` (voice_worker.sender / voice_worker.clients) with the
  worker's service token, straight to chat_svc's gRPC port as `CHAT_SVC_ADDRESS` points the worker
  (not through Envoy, which does not route ReportTranscript).
- **Watches** go the way the page's do: `WatchConversation` through Envoy (native gRPC on the
  edge listener), one per call, with that call's user token.
- **report -> delivery**: from the moment the sender hands a segment to ReportTranscript to the
  moment the watcher reads its final message off the stream; also turn -> delivery, from the
  moment the turn was written to the outbox (what a caller waits for, the sender's wake-up included).
- **lost**: segments reported but never delivered; **doubled**: a message revision delivered twice.

The mesh (store seeded with 10,000 conversations / 100,000 messages, LiveKit, agent_svc, chat_svc,
Envoy) runs as `make run` runs it, at log level INFO. Reporters and watchers each run in a process
of their own, apart from everything they measure. Both use one clock (CLOCK_MONOTONIC).

`.venv/bin/python -m bench transcripts`, or `python -m bench.transcripts [--calls 20 100]
[--rate 4] [--seconds 10] [--seed-conversations N] [--seed-messages M]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench._chat_mesh import (
    SEED_CONVERSATIONS,
    SEED_MESSAGES,
    ChatMesh,
    CpuMeter,
    LoadProcess,
    ServerTimes,
    chat_mesh,
    emit,
    load_average,
    monotonic_ms,
    next_command,
)
from bench.identity import as_user
from bench.stats import percentile
from servicekit import logs
from servicekit.client import ServiceCredentials
from syntera.conversation.v1 import conversation_service_pb2 as api
from syntera.conversation.v1 import conversation_service_pb2_grpc as api_grpc
from syntera.conversation.v1 import resources_pb2 as pb
from voice_worker.clients import SERVICE_NAME, ChatTranscriptSink
from voice_worker.outbox import Outbox, outbox_path
from voice_worker.segments import Segment
from voice_worker.sender import OutboxSender

# The worker's own RPC deadline default (VOICE_WORKER_RPC_TIMEOUT_SECONDS).
_REPORT_TIMEOUT_SECONDS = 5.0
_SERVICE_SECRET_ENV = "BENCH_SERVICE_JWT_SECRET"
_SETTLE_SECONDS = 3.0


# ----------------------------------------------------------------------------- the reporter process


class _TimedSink:
    """The worker's sink, noting when each segment first went out (the report's start)."""

    def __init__(self, sink: ChatTranscriptSink, sent: dict[str, float], took: list[float]) -> None:
        self._sink = sink
        self._sent = sent
        self._took = took

    async def report(self, conversation_id: str, segments: Any, call_metadata: Any = None) -> None:
        now = monotonic_ms()
        for segment in segments:
            self._sent.setdefault(segment.segment_id, now)
        await self._sink.report(conversation_id, segments, call_metadata)
        self._took.append(monotonic_ms() - now)


async def _report(conversations: list[str], chat_addr: str, rate: float, seconds: float) -> None:
    credentials = ServiceCredentials(os.environ[_SERVICE_SECRET_ENV], SERVICE_NAME)
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as folder:
        sinks = [ChatTranscriptSink(chat_addr, credentials, _REPORT_TIMEOUT_SECONDS) for _ in conversations]
        sent: dict[str, float] = {}
        written: dict[str, float] = {}
        took: list[float] = []
        calls = []
        for n, (conversation_id, sink) in enumerate(zip(conversations, sinks, strict=True)):
            outbox = Outbox(outbox_path(Path(folder), f"call-{n}"))
            sender = OutboxSender(outbox, _TimedSink(sink, sent, took), call_metadata={"providers": "bench"})
            sender.start()
            calls.append((conversation_id, outbox, sender))
        emit({"ready": len(calls)})
        await next_command()  # go
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def speak(index: int, conversation_id: str, outbox: Outbox, sender: OutboxSender) -> None:
            # Calls start spread over one period, as real calls do not speak in lockstep.
            offset = index / len(calls) / rate
            for n in range(int(rate * seconds)):
                # Open loop: turn n is due at its time whatever the previous reports took.
                await asyncio.sleep(max(0.0, started + offset + n / rate - loop.time()))
                segment_id = f"{conversation_id}:user:{n}"
                written[segment_id] = monotonic_ms()
                outbox.put(conversation_id, Segment(segment_id, "user", f"turn {n}", final=True))
                sender.notify()

        await asyncio.gather(*(speak(i, *call) for i, call in enumerate(calls)))
        flushed = await asyncio.gather(*(sender.flush(30) for _, _, sender in calls))
        failed = sum(sender.failed_attempts for _, _, sender in calls)
        for _, outbox, sender in calls:
            await sender.aclose()
            outbox.close()
        for sink in sinks:
            await sink.aclose()
        emit(
            {
                "sent": sent,
                "written": written,
                "unflushed": sum(not f for f in flushed),
                "failed_attempts": failed,
                "took": took,
            }
        )


# ------------------------------------------------------------------------------ the watcher process


async def _watch(calls: list[tuple[str, str]], envoy_addr: str) -> None:
    received: dict[str, float] = {}
    revisions: Counter[tuple[str, int, int]] = Counter()
    errors: list[str] = []
    opened = 0
    all_open = asyncio.Event()
    async with grpc.aio.insecure_channel(envoy_addr) as channel:
        stub = api_grpc.ConversationServiceStub(channel)

        async def follow(conversation_id: str, user: str) -> None:
            nonlocal opened
            first = True
            stream = stub.WatchConversation(
                api.WatchConversationRequest(conversation_id=conversation_id), metadata=as_user(user)
            )
            try:
                async for event in stream:
                    kind = event.WhichOneof("event")
                    if kind == "keep_alive" and first:
                        first = False
                        opened += 1
                        if opened == len(calls):
                            all_open.set()
                    elif kind == "message":
                        message = event.message
                        revisions[(conversation_id, message.seq, message.revision)] += 1
                        if message.final:
                            received.setdefault(message.segment_id, monotonic_ms())
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.CANCELLED:
                    errors.append(f"{exc.code().name}: {exc.details()}")

        tasks = [asyncio.create_task(follow(c, u)) for c, u in calls]
        try:
            await asyncio.wait_for(all_open.wait(), 60)
        except TimeoutError:
            emit({"error": f"only {opened} of {len(calls)} watch streams opened", "errors": errors[:5]})
            return
        emit({"ready": opened})
        await next_command()  # stop
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    doubled = sum(count - 1 for count in revisions.values() if count > 1)
    emit({"received": received, "doubled": doubled, "errors": errors})


# ------------------------------------------------------------------------------------ the benchmark


@dataclass(frozen=True)
class Figures:
    calls: int
    reported: int
    delivered: int
    lost: int
    doubled: int
    report_p50: float
    report_p99: float
    turn_p50: float
    turn_p99: float
    steady_p50: float
    steady_p99: float
    failed_attempts: int
    watch_errors: list[str]
    cpu: str
    rpc: str
    # report -> delivery p99 (ms) of the segments written in each second of the run, in order.
    p99_by_second: list[float]


async def _create(target: ChatMesh, calls: int) -> list[tuple[str, str]]:
    """`calls` VOICE conversations, each its own user's, created through Envoy as the page does."""
    created: list[tuple[str, str]] = []
    async with grpc.aio.insecure_channel(target.envoy_addr) as channel:
        stub = api_grpc.ConversationServiceStub(channel)
        for n in range(calls):
            user = f"bench-caller-{n}"
            response = await stub.CreateConversation(
                api.CreateConversationRequest(
                    agent_id="default", channel=pb.CHANNEL_VOICE, request_id=uuid.uuid4().hex
                ),
                metadata=as_user(user),
                timeout=30,
            )
            created.append((response.conversation.conversation_id, user))
    return created


async def _run_once(target: ChatMesh, calls: int, rate: float, seconds: float, per_reporter: int) -> Figures:
    created = await _create(target, calls)
    logs = target.workdir / "load"
    watcher = LoadProcess(
        "bench.transcripts",
        ["watch", "--target", target.envoy_addr, "--calls", json.dumps(created)],
        logs / f"watchers-{calls}.log",
    )
    # Reporters split over processes, as calls are over worker processes (each a few calls).
    ids = [c for c, _ in created]
    reporters = [
        LoadProcess(
            "bench.transcripts",
            [
                "report",
                "--target",
                target.chat_addr,
                "--conversations",
                json.dumps(ids[start : start + per_reporter]),
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
            ],
            logs / f"reporters-{calls}-{start}.log",
            env={_SERVICE_SECRET_ENV: target.mesh.service_jwt_secret},
        )
        for start in range(0, len(ids), per_reporter)
    ]
    try:
        ready = await watcher.line(90)
        if "error" in ready:
            raise RuntimeError(f"watchers: {ready}")
        for reporter in reporters:
            await reporter.line(60)
        meter = CpuMeter(
            {**target.pids(), "reporters": [r.pid for r in reporters], "watchers": [watcher.pid]}
        )
        meter.start()
        served = ServerTimes(target.mesh.log_dir / "chat_svc.log", "/ReportTranscript")
        served.start()
        for reporter in reporters:
            reporter.send({"go": True})
        parts = [await reporter.line(seconds + 120) for reporter in reporters]
        cpu = meter.report()
        reported: dict[str, Any] = {
            "sent": {k: v for part in parts for k, v in part["sent"].items()},
            "written": {k: v for part in parts for k, v in part["written"].items()},
            "failed_attempts": sum(part["failed_attempts"] for part in parts),
            "took": [t for part in parts for t in part["took"]],
        }
        in_service = served.durations_ms()
        # Every report was acknowledged; a delivery that has not come after this counts as lost.
        await asyncio.sleep(_SETTLE_SECONDS)
        watcher.send({"stop": True})
        received = await watcher.line(60)
    finally:
        watcher.close()
        for reporter in reporters:
            reporter.close()
    sent: dict[str, float] = reported["sent"]
    written: dict[str, float] = reported["written"]
    got: dict[str, float] = received["received"]
    report_latencies = [(got[s] - sent[s]) / 1000 for s in sent if s in got]
    turn_latencies = [(got[s] - written[s]) / 1000 for s in written if s in got]
    # The first second separately: every call's first turn (the conversation looked up, the call
    # metadata merged) and the client pools filling land there; a call does that once.
    first = min(written.values(), default=0.0) + 1000
    steady = [(got[s] - sent[s]) / 1000 for s in sent if s in got and written[s] >= first]
    by_second: dict[int, list[float]] = {}
    for s in sent:
        if s in got:
            by_second.setdefault(int((written[s] - first + 1000) // 1000), []).append(got[s] - sent[s])
    return Figures(
        calls=calls,
        reported=len(written),
        delivered=sum(1 for s in written if s in got),
        lost=sum(1 for s in written if s not in got),
        doubled=int(received["doubled"]),
        report_p50=percentile(report_latencies, 50) * 1000,
        report_p99=percentile(report_latencies, 99) * 1000,
        turn_p50=percentile(turn_latencies, 50) * 1000,
        turn_p99=percentile(turn_latencies, 99) * 1000,
        steady_p50=percentile(steady, 50) * 1000,
        steady_p99=percentile(steady, 99) * 1000,
        failed_attempts=int(reported["failed_attempts"]),
        watch_errors=list(received["errors"])[:5],
        cpu=cpu,
        rpc=(
            f"{len(reported['took'])} ReportTranscript calls from {len(reporters)} reporter processes, "
            f"p50 {percentile(reported['took'], 50):.1f} ms, "
            f"p99 {percentile(reported['took'], 99):.1f} ms; in chat_svc (its log) p50 "
            f"{percentile(in_service, 50):.1f} ms, p99 {percentile(in_service, 99):.1f} ms"
        ),
        p99_by_second=[percentile(by_second[k], 99) for k in sorted(by_second)],
    )


async def run(
    calls: list[int],
    rate: float,
    seconds: float,
    seed_conversations: int,
    seed_messages: int,
    per_reporter: int = 25,
) -> int:
    print(f"transcripts: {load_average()} before the mesh starts", flush=True)
    failed = 0
    async with chat_mesh(seed_conversations=seed_conversations, seed_messages=seed_messages) as target:
        print(f"  {target.seeded}; services at log level INFO; Envoy access log on", flush=True)
        print(
            "  path: reports from the worker's outbox/sender/sink processes straight to chat_svc's gRPC"
            " port (as the worker sends them; Envoy does not route ReportTranscript); watches through"
            " Envoy as the page's; reporters and watchers in processes of their own",
            flush=True,
        )
        for count in calls:
            figures = await _run_once(target, count, rate, seconds, per_reporter)
            print(
                f"  {count} calls x {rate:g} segments/s for {seconds:g} s ({load_average()} after):\n"
                f"    reported {figures.reported}, delivered {figures.delivered}, "
                f"lost {figures.lost}, doubled {figures.doubled}, "
                f"report retries {figures.failed_attempts}\n"
                f"    report -> delivery p50 {figures.report_p50:.1f} ms, p99 {figures.report_p99:.1f} ms\n"
                f"    after the first second: report -> delivery p50 {figures.steady_p50:.1f} ms, "
                f"p99 {figures.steady_p99:.1f} ms\n"
                f"    report -> delivery p99 in each second of the run (ms): "
                f"{' '.join(f'{v:.0f}' for v in figures.p99_by_second)}\n"
                f"    turn written -> delivery p50 {figures.turn_p50:.1f} ms, p99 {figures.turn_p99:.1f} ms\n"
                f"    {figures.rpc}\n"
                f"    CPU (share of one core while reporting): {figures.cpu}",
                flush=True,
            )
            if figures.watch_errors:
                print(f"    watch errors: {figures.watch_errors}", flush=True)
            failed += int(bool(figures.lost or figures.doubled or figures.watch_errors))
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="role")
    report = sub.add_parser("report", help="(internal) the reporters' process")
    report.add_argument("--target", required=True)
    report.add_argument("--conversations", required=True)
    report.add_argument("--rate", type=float, required=True)
    report.add_argument("--seconds", type=float, required=True)
    watch = sub.add_parser("watch", help="(internal) the watchers' process")
    watch.add_argument("--target", required=True)
    watch.add_argument("--calls", required=True)
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 100], dest="call_counts")
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed-conversations", type=int, default=SEED_CONVERSATIONS)
    parser.add_argument("--seed-messages", type=int, default=SEED_MESSAGES)
    parser.add_argument("--calls-per-reporter", type=int, default=25, help="calls per reporter process")
    args = parser.parse_args()
    if args.role is not None:
        # As the worker logs (JSON at INFO); its lines go to the load log, not the figures.
        logs.configure("INFO", "json", service=f"bench-{args.role}")
    if args.role == "report":
        asyncio.run(_report(json.loads(args.conversations), args.target, args.rate, args.seconds))
    elif args.role == "watch":
        calls = [(c, u) for c, u in json.loads(args.calls)]
        asyncio.run(_watch(calls, args.target))
    else:
        sys.exit(
            asyncio.run(
                run(
                    args.call_counts,
                    args.rate,
                    args.seconds,
                    args.seed_conversations,
                    args.seed_messages,
                    max(1, args.calls_per_reporter),
                )
            )
        )


if __name__ == "__main__":
    main()
