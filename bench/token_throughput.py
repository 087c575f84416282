"""`bench token`: the user's token request through the whole mesh, side by side with the seed's stack.

Ours: `POST /api/livekit/token` → Envoy (JSON transcoding) → agent_svc GenerateToken → chat_svc
GetConversation (the ownership check, with the user's own bearer token) → the store; every service
at INFO with Envoy's access log, as `make run` runs them. The reference: bench/reference/server.js,
Express + livekit-server-sdk + one MongoDB findOne for ownership, the seed's stack, on the same
store (its own database, holding the same conversations). Both get the same requests from the same
load generator (autocannon, Node, in its own process) over the same number of keep-alive
connections; each request is a real user's token for one of their own conversations.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pymongo import AsyncMongoClient

from bench.harness import (
    BENCH_JWT_SECRET,
    MESH_DATABASE,
    REFERENCE_DATABASE,
    REFERENCE_DIR,
    TokenStack,
)
from servicekit import auth
from syntera.conversation.v1 import conversation_service_pb2 as conv_api
from syntera.conversation.v1 import conversation_service_pb2_grpc as conv_grpc
from syntera.conversation.v1 import resources_pb2 as conv_res

TOKEN_PATH = "/api/livekit/token"
REQUEST_TIMEOUT_SECONDS = 10
_COPY_BATCH = 1000


@dataclass(frozen=True)
class Target:
    """One user's conversation the bench asks tokens for."""

    user_id: str
    bearer: str
    conversation_id: str


@dataclass(frozen=True)
class LoadResult:
    """One load run against one server."""

    server: str
    connections: int
    requests: int
    errors: int
    statuses: dict[str, int]
    elapsed_s: float
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_s: dict[str, float]


async def create_conversations(chat_addr: str, users: int, per_user: int) -> list[Target]:
    """`users` bench users with `per_user` VOICE conversations each, created through chat_svc as them."""
    targets: list[Target] = []
    async with grpc.aio.insecure_channel(chat_addr) as channel:
        stub = conv_grpc.ConversationServiceStub(channel)

        async def create(user: str, bearer: str) -> Target:
            reply = await stub.CreateConversation(
                conv_api.CreateConversationRequest(
                    agent_id="default", channel=conv_res.CHANNEL_VOICE, request_id=uuid.uuid4().hex
                ),
                metadata=(("authorization", f"Bearer {bearer}"),),
                timeout=30,
            )
            return Target(user, bearer, reply.conversation.conversation_id)

        for n in range(users):
            user = f"bench-user-{n}"
            bearer = auth.mint(BENCH_JWT_SECRET, user, ttl_seconds=3600)
            targets += await asyncio.gather(*(create(user, bearer) for _ in range(per_user)))
    return targets


async def copy_conversations(store_uri: str) -> int:
    """Copies every conversation of the mesh's database into the reference's, as the seed stored them."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_uri, timeoutMS=600_000)
    try:
        source = client[MESH_DATABASE]["conversations"]
        target = client[REFERENCE_DATABASE]["conversations"]
        await target.drop()
        copied = 0
        batch: list[dict[str, Any]] = []
        async for doc in source.find({}, projection={"user_id": 1, "agent_id": 1, "channel": 1, "status": 1}):
            batch.append(doc)
            if len(batch) >= _COPY_BATCH:
                await target.insert_many(batch, ordered=False)
                copied += len(batch)
                batch = []
        if batch:
            await target.insert_many(batch, ordered=False)
            copied += len(batch)
        return copied
    finally:
        await client.close()


def requests_for(targets: Sequence[Target]) -> list[dict[str, Any]]:
    """The HTTP requests the load generator cycles through: each user's token for their own conversation."""
    return [
        {
            "path": TOKEN_PATH,
            "headers": {"authorization": f"Bearer {t.bearer}", "content-type": "application/json"},
            "body": json.dumps(
                {"conversationId": t.conversation_id, "userId": t.user_id, "agentId": "default"}
            ),
        }
        for t in targets
    ]


def run_load(
    server: str,
    url: str,
    requests: list[dict[str, Any]],
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    workdir: Path,
    processes: dict[str, int],
) -> LoadResult:
    """One closed-loop run of the load generator (its own process) against `url`."""
    config = workdir / f"load-{server}-{connections}.json"
    config.write_text(
        json.dumps(
            {
                "url": url,
                "connections": connections,
                "durationSeconds": duration_s,
                "warmupSeconds": warmup_s,
                "timeoutSeconds": REQUEST_TIMEOUT_SECONDS,
                "requests": requests,
            }
        )
    )
    before = _cpu_seconds(processes)
    load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["node", str(REFERENCE_DIR / "load.js"), str(config)],
        cwd=REFERENCE_DIR,
        capture_output=True,
        text=True,
        timeout=duration_s + warmup_s + 60,
        check=False,
    )
    after = _cpu_seconds(processes)
    load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The load generator is this process's child, waited for: its CPU is in RUSAGE_CHILDREN.
    before["load"] = load_before.ru_utime + load_before.ru_stime
    after["load"] = load_after.ru_utime + load_after.ru_stime
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.strip()[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU over warm-up and measured window together, per second of both: what each process used.
    window = duration_s + warmup_s
    return LoadResult(
        server=server,
        connections=connections,
        requests=int(out["requests"]),
        errors=int(out["errors"]),
        statuses={str(k): int(v) for k, v in out["statuses"].items()},
        elapsed_s=float(out["elapsedSeconds"]),
        per_second=float(out["perSecond"]),
        p50_ms=out["p50"],
        p99_ms=out["p99"],
        cpu_s={name: (after[name] - before[name]) / window for name in (*processes, "load")},
    )


def _cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each process's whole process group (Envoy's wrapper,
    the store's threads and any child included): every process here leads a group of its own."""
    ticks = os.sysconf("SC_CLK_TCK")
    groups = {pid: name for name, pid in processes.items()}
    used = dict.fromkeys(processes, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: fields start after the last ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        name = groups.get(int(fields[2]))  # field 5 of stat: the process group
        if name is not None:
            used[name] += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def load_average() -> str:
    """What `uptime` says about load: other work on the machine skews every figure."""
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def measure(
    stack: TokenStack,
    targets: Sequence[Target],
    *,
    connections: Sequence[int],
    duration_s: float,
    warmup_s: float,
    workdir: Path,
) -> list[LoadResult]:
    """For each connection count ours and the reference (alternately first), the same requests to both."""
    assert stack.mesh.envoy_url is not None  # noqa: S101 - token_stack always starts Envoy
    requests = requests_for(targets)
    results: list[LoadResult] = []
    servers = [("ours", stack.mesh.envoy_url), ("reference", stack.reference_url)]
    for index, count in enumerate(connections):
        # Alternating which goes first, so neither always runs on the machine the other just heated.
        for server, url in servers if index % 2 == 0 else servers[::-1]:
            results.append(
                run_load(
                    server,
                    url,
                    requests,
                    connections=count,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    workdir=workdir,
                    processes=stack.processes,
                )
            )
            print(f"  {server:<9} {count:>3} connections: {results[-1].per_second:7.0f} req/s", flush=True)
            time.sleep(0.5)
    return results


def table(results: Sequence[LoadResult]) -> str:
    """req/s, p50, p99 and errors of each run, and ours/reference at each connection count."""
    header = (
        f"{'conns':>5} {'server':<9} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'ours/ref req/s':>14}"
    )
    rows = [header, "-" * len(header)]
    # `measure` runs ours and the reference back to back for each connection count: pairs.
    for start in range(0, len(results), 2):
        pair = {r.server: r for r in results[start : start + 2]}
        count = results[start].connections
        for server in ("ours", "reference"):
            found = pair.get(server)
            if found is None:
                continue
            r = found
            ratio = ""
            if server == "ours" and "reference" in pair and pair["reference"].per_second > 0:
                ratio = f"{r.per_second / pair['reference'].per_second:.2f}"
            rows.append(
                f"{count:>5} {server:<9} {r.requests:>8} {r.errors:>6} {r.per_second:>8.0f} "
                f"{_ms(r.p50_ms):>7} {_ms(r.p99_ms):>7} {ratio:>14}"
            )
    return "\n".join(rows)


def cpu_table(results: Sequence[LoadResult]) -> str:
    """Cores each process used during each run (1.00 = one core busy the whole time)."""
    names = list(results[0].cpu_s) if results else []
    header = f"{'conns':>5} {'server':<9} " + " ".join(f"{n:>10}" for n in names)
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(f"{r.connections:>5} {r.server:<9} " + " ".join(f"{r.cpu_s[n]:>10.2f}" for n in names))
    return "\n".join(rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def to_json(results: Sequence[LoadResult]) -> list[dict[str, Any]]:
    return [
        {
            "server": r.server,
            "connections": r.connections,
            "requests": r.requests,
            "errors": r.errors,
            "statuses": r.statuses,
            "per_second": round(r.per_second, 1),
            "p50_ms": None if r.p50_ms is None else round(r.p50_ms, 3),
            "p99_ms": None if r.p99_ms is None else round(r.p99_ms, 3),
            "cores_used": {k: round(v, 3) for k, v in r.cpu_s.items()},
        }
        for r in results
    ]
