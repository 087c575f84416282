"""`python -m bench [SUITE ...]` (`make bench`): benchmarks on loopback, figures printed.

Suites:
    token          POST /api/livekit/token as users make it (Envoy → agent_svc → chat_svc ownership
                   check → the store, INFO logs) against the seed's stack (Express +
                   livekit-server-sdk + one findOne) on the same store: req/s, p50/p99, errors and
                   ours/reference at 4, 16 and 32 connections; load from autocannon in its own
                   process (bench/token_throughput.py).
    transcripts    ReportTranscript → watcher delivery (bench/transcripts.py, when present).
    call_setup     CreateConversation(VOICE) p50/p99 (bench/call_setup.py, when present).
    text_replies   agent replies in TEXT conversations through Envoy, 20 conversations at once: time
                   to the reply's first text and to the final reply, p50/p99, with the scripted
                   responder and an OpenAI-compatible stand-in model (about a minute; only when
                   named; bench/text_replies.py).
    voice_latency, voice_wer, voice_memory
                   the offline voice pipeline (minutes each; only when named).
    voice_call     real calls over the LiveKit server: voice-to-voice latency as the caller hears
                   it at 1 and 5 calls, worker CPU and RSS, where the time goes (about 8 minutes;
                   only when named; bench/voice_call.py).

Without SUITE: token, transcripts and call_setup. Each suite starts its own processes. Not part of
`make test`: figures depend on the machine, and nothing asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import token_throughput
from bench.harness import MESH_DATABASE, load_generator_version, node_missing, running_store, token_stack

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITES = ("token", "transcripts", "call_setup")
# Suites other engineers own, each runnable as `python -m bench.<name>` and printing its own figures.
MODULE_SUITES = (
    "transcripts",
    "call_setup",
    "text_replies",
    "voice_latency",
    "voice_wer",
    "voice_memory",
    "voice_call",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # No `choices`: argparse rejects an empty list against them (nargs="*").
    parser.add_argument("suites", nargs="*", metavar="SUITE", help="token, " + ", ".join(MODULE_SUITES))
    parser.add_argument(
        "--concurrency",
        "--connections",
        type=_counts,
        default=(4, 16, 32),
        help="token: keep-alive connections, comma-separated (default 4,16,32)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="token: measured seconds per run (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="token: unmeasured seconds first (1)")
    parser.add_argument("--users", type=int, default=32, help="token: bench users (32)")
    parser.add_argument(
        "--conversations-per-user", type=int, default=4, help="token: conversations of each bench user (4)"
    )
    parser.add_argument(
        "--seed-conversations",
        type=int,
        default=10_000,
        help="token: conversations already in the store before the bench starts (10000; 0 for none)",
    )
    parser.add_argument(
        "--seed-messages", type=int, default=100_000, help="token: messages already in the store (100000)"
    )
    parser.add_argument(
        "--agent-workers",
        type=int,
        default=2,
        help="token: AGENT_SVC_WORKERS, agent_svc processes sharing its port (2: one per core here)",
    )
    parser.add_argument("--json", type=Path, default=None, help="token: also write the figures to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60 or not 1 <= args.users <= 1000:
        print("error: --duration 0..600 s, --warmup 0..60 s, --users 1..1000", file=sys.stderr)
        return 2
    unknown = [s for s in args.suites if s not in ("token", *MODULE_SUITES)]
    if unknown:
        print(f"error: unknown suite(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    named = bool(args.suites)
    suites = list(dict.fromkeys(args.suites or DEFAULT_SUITES))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    failed = 0
    for suite in suites:
        if suite == "token":
            failed += _token(args)
        elif importlib.util.find_spec(f"bench.{suite}") is None:
            if named:
                print(f"error: bench/{suite}.py does not exist (yet)", file=sys.stderr)
                failed += 1
            else:
                print(f"({suite}: bench/{suite}.py not present, skipped)\n")
        else:
            print(f"== {suite} ==", flush=True)
            # Their own process: each suite sets up (and tears down) what it measures.
            failed += (
                subprocess.run([sys.executable, "-m", f"bench.{suite}"], cwd=ROOT, check=False).returncode
                != 0
            )
            print()
    return 1 if failed else 0


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or not all(1 <= c <= 512 for c in counts):
        raise argparse.ArgumentTypeError("connection counts must be 1..512, comma-separated")
    return counts


def _token(args: argparse.Namespace) -> int:
    missing = node_missing()
    if missing is not None:
        print(f"error: token: {missing}", file=sys.stderr)
        return 1
    print("== token ==\n" + (token_throughput.__doc__ or "").strip() + "\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="syntera-bench-") as tmp, running_store(Path(tmp)) as store:
        seeded = _seed(store.uri, args.seed_conversations, args.seed_messages)
        print(f"store: {seeded}", flush=True)
        agent_env = {"AGENT_SVC_WORKERS": str(args.agent_workers)}
        with token_stack(store, Path(tmp), agent_env) as stack:
            assert stack.mesh.chat_addr is not None  # noqa: S101 - token_stack starts chat_svc
            targets = asyncio.run(
                token_throughput.create_conversations(
                    stack.mesh.chat_addr, args.users, args.conversations_per_user
                )
            )
            copied = asyncio.run(token_throughput.copy_conversations(stack.store_uri))
            print(
                f"requests: {len(targets)} ({args.users} users x {args.conversations_per_user} VOICE "
                f"conversations, made through chat_svc; the reference's database has the same "
                f"{copied} conversations); each connection cycles through them",
                flush=True,
            )
            print(
                f"load: {load_generator_version()} (Node, its own process), keep-alive HTTP/1.1, "
                f"{args.duration:g} s measured after {args.warmup:g} s warm-up per run",
                flush=True,
            )
            print(
                f"agent_svc: {args.agent_workers} worker process(es) (AGENT_SVC_WORKERS); chat_svc, "
                "Envoy (1 thread), the store and the reference: one process each",
                flush=True,
            )
            print(f"before: {token_throughput.load_average()}", flush=True)
            results = token_throughput.measure(
                stack,
                targets,
                connections=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                workdir=Path(tmp),
            )
            print(f"after:  {token_throughput.load_average()}\n", flush=True)
    print(token_throughput.table(results) + "\n")
    print("cores used during each run (warm-up included; `load` is the load generator):")
    print(token_throughput.cpu_table(results) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(token_throughput.to_json(results), indent=2) + "\n")
    return 1 if any(r.errors for r in results) else 0


def _seed(uri: str, conversations: int, messages: int) -> str:
    """Fills the mesh's database first, so the figures are those of a store that has been used."""
    if conversations <= 0:
        return "empty (no seed)"
    started = time.perf_counter()
    # The store seeding of bench/seed.py (shared with the other benches), when it is there.
    if importlib.util.find_spec("bench.seed") is None:
        return "empty (bench/seed.py is not there)"
    seed = importlib.import_module("bench.seed")
    done = asyncio.run(seed.seed_uri(uri, MESH_DATABASE, conversations=conversations, messages=messages))
    return (
        f"seeded {done.conversations} conversations and {done.messages} messages "
        f"in {time.perf_counter() - started:.0f} s before the services started"
    )


if __name__ == "__main__":
    sys.exit(main())
