"""`python -m bench [SUITE ...]` (`make bench`): benchmarks on loopback, figures printed.

Suites:
    token          GenerateToken req/s and p50/p99: gRPC direct, gRPC via Envoy, REST via Envoy.
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
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import token_throughput
from bench.harness import running_mesh
from bench.stats import RunResult, table

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
    parser.add_argument("--concurrency", type=int, default=16, help="token: calls in flight (default 16)")
    parser.add_argument("--duration", type=float, default=5.0, help="token: measured seconds per path (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="token: unmeasured seconds first (1)")
    parser.add_argument("--json", type=Path, default=None, help="token: also write the figures to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.concurrency <= 512 or not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        print("error: --concurrency 1..512, --duration 0..600 s, --warmup 0..60 s", file=sys.stderr)
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


def _token(args: argparse.Namespace) -> int:
    print(
        f"== token == GenerateToken, {args.concurrency} in flight, "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="syntera-bench-") as tmp, running_mesh(Path(tmp)) as mesh:
        results = asyncio.run(
            token_throughput.measure(
                mesh, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
            )
        )
    print(table(results) + "\n")
    if args.json is not None:
        _write_json(args.json, results)
    return 1 if any(r.errors for r in results) else 0


def _write_json(path: Path, results: list[RunResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "path": r.name,
            "concurrency": r.concurrency,
            "requests": r.requests,
            "errors": r.errors,
            "per_second": round(r.per_second, 1),
            "p50_ms": round(r.percentile_ms(50), 3),
            "p99_ms": round(r.percentile_ms(99), 3),
        }
        for r in results
    ]
    path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
