"""`python -m bench` (`make bench`): starts its own processes on loopback ports, measures, prints a table.

Not part of `make test`: figures depend on the machine, and nothing asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench import token_throughput
from bench.harness import running_mesh
from bench.stats import table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight (default 16)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per path (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.concurrency <= 512 or not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        print("error: --concurrency 1..512, --duration 0..600 s, --warmup 0..60 s", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="syntera-bench-") as tmp, running_mesh(Path(tmp)) as mesh:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(
            f"GenerateToken, {args.concurrency} in flight, "
            f"{args.duration:g} s measured after {args.warmup:g} s warm-up\n"
        )
        results = asyncio.run(
            token_throughput.measure(
                mesh, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
            )
        )
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                [
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
                ],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
