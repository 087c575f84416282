"""A throwaway mesh for the chat_svc benchmarks, as `make run` runs it, on a store that has been used.

Store, the LiveKit server, agent_svc, chat_svc and Envoy, each its own process at `make run`'s log
level (INFO), with Envoy's access log on. The store is seeded first (bench.seed: 10,000
conversations and 100,000 messages by default) so the figures hold for a store that has been in
use, not a fresh one. Load generators run in processes of their own (`spawn_load`), never in the
benchmark's process, which only starts things and adds up the results.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH_JWT_SECRET
from bench.identity import BENCH_SERVICE_JWT_SECRET
from devrun.mesh import Mesh, start_mesh
from devrun.store import EmbeddedStore

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench"
# The store's fill level every figure must hold at (issue #13, point 5).
SEED_CONVERSATIONS = 10_000
SEED_MESSAGES = 100_000


# Marks a child's result lines apart from its log lines on the same stdout.
_MARK = "@bench "


@dataclass(frozen=True)
class ChatMesh:
    """The running mesh and where its parts are."""

    mesh: Mesh
    chat_addr: str
    envoy_addr: str
    workdir: Path
    seeded: str
    store_pid: int

    def pids(self) -> dict[str, list[int]]:
        """The measured processes' ids, by name."""
        pids = {"nx-27017": [self.store_pid]}
        for name in ("chat_svc", "agent_svc", "envoy"):
            popen = self.mesh.process(name).popen
            if popen is not None:
                pids[name] = [popen.pid]
        return pids


class ServerTimes:
    """How long the service itself took per call of one method, from its own access log lines.

    Against the client's figures this tells time in the service from time queued on the way
    (client event loop, sockets, a busy machine).
    """

    def __init__(self, log_path: Path, method_suffix: str) -> None:
        self._path = log_path
        self._suffix = method_suffix
        self._offset = 0

    def start(self) -> None:
        self._offset = self._path.stat().st_size if self._path.exists() else 0

    def durations_ms(self) -> list[float]:
        durations: list[float] = []
        with self._path.open() as log:
            log.seek(self._offset)
            for line in log:
                if '"rpc finished"' not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if str(entry.get("method", "")).endswith(self._suffix):
                    durations.append(float(entry.get("duration_ms", 0.0)))
        return durations


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Shares of a core each process (or group of processes) used between `start()` and `report()`."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self._began = 0.0

    def start(self) -> None:
        self._began = time.monotonic()
        self._start = {name: self._used(pids) for name, pids in self._pids.items()}

    def report(self) -> str:
        wall = max(time.monotonic() - self._began, 1e-9)
        shares = {name: (self._used(pids) - self._start[name]) / wall for name, pids in self._pids.items()}
        return ", ".join(f"{name} {share * 100:.0f}%" for name, share in shares.items())

    @staticmethod
    def _used(pids: list[int]) -> float:
        return sum(cpu_seconds(pid) for pid in pids)


def load_average() -> str:
    """`uptime`'s load averages: the figures on this shared machine mean little without them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


async def _seed(uri: str, conversations: int, messages: int) -> str:
    if conversations <= 0:
        return "store not seeded"
    try:
        from bench.seed import seed_uri  # noqa: PLC0415 - the seeding module may not exist yet
    except ImportError:
        return "store not seeded (bench/seed.py absent)"
    seeded = await seed_uri(uri, DATABASE, conversations=conversations, messages=messages)
    return (
        f"store seeded with {seeded.conversations} conversations, {seeded.messages} messages "
        f"in {seeded.seconds:.0f} s"
    )


@asynccontextmanager
async def chat_mesh(
    *, seed_conversations: int = SEED_CONVERSATIONS, seed_messages: int = SEED_MESSAGES
) -> AsyncIterator[ChatMesh]:
    """Yields a serving mesh (chat_svc calling a real agent_svc, Envoy in front) on a seeded store."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as folder:
        base = Path(folder)
        store = EmbeddedStore(base / "store", base / "store.log")
        store.start()
        try:
            seeded = await _seed(store.uri, seed_conversations, seed_messages)
            mesh = start_mesh(
                store,
                base / "mesh",
                jwt_secret=BENCH_JWT_SECRET,
                service_jwt_secret=BENCH_SERVICE_JWT_SECRET,
                database=DATABASE,
                with_chat=True,
                with_envoy=True,
                log_level="INFO",
                # The deployment's call limits (5 at once by default) are not what is measured.
                extra_env={
                    "QUOTA_MAX_CONCURRENT_AGENT_SESSIONS": "0",
                    "QUOTA_AGENT_MINUTES_PER_MONTH": "0",
                    "QUOTA_PARTICIPANT_MINUTES_PER_MONTH": "0",
                },
            )
            try:
                assert mesh.chat_addr is not None  # noqa: S101 - asked for with_chat
                assert mesh.envoy_addr is not None  # noqa: S101 - asked for with_envoy
                assert store.process is not None  # noqa: S101 - started above
                assert store.process.popen is not None  # noqa: S101 - started above
                yield ChatMesh(mesh, mesh.chat_addr, mesh.envoy_addr, base, seeded, store.process.popen.pid)
            finally:
                mesh.close()
        finally:
            store.stop()


class LoadProcess:
    """A load generator in a child process: JSON commands on its stdin, JSON lines on its stdout.

    The child (`python -m bench.<module> <role> ...`) prints `{"ready": ...}` when set up, waits
    for `{"go": ...}` when the protocol needs it, and prints its result as the last line.
    """

    def __init__(
        self, module: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a")
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            text=True,
        )

    async def line(self, limit_seconds: float) -> dict[str, Any]:
        """The child's next JSON line (TimeoutError if none comes in time, EOFError if it died)."""
        assert self._proc.stdout is not None  # noqa: S101 - opened with a pipe
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            raw = await asyncio.wait_for(asyncio.to_thread(self._proc.stdout.readline), max(remaining, 0.001))
            if not raw:
                raise EOFError(f"load process exited with {self._proc.wait()}")
            if raw.startswith(_MARK):
                parsed: dict[str, Any] = json.loads(raw[len(_MARK) :])
                return parsed
            self._log.write(raw)  # the child's own log lines (the worker's clients log to stdout)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None  # noqa: S101 - opened with a pipe
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def emit(message: dict[str, Any]) -> None:
    """A child's JSON line to the benchmark."""
    sys.stdout.write(_MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


async def next_command() -> dict[str, Any]:
    """A child's next command from the benchmark (an empty dict when its stdin closed)."""
    raw = await asyncio.to_thread(sys.stdin.readline)
    parsed: dict[str, Any] = json.loads(raw) if raw.strip() else {}
    return parsed


def monotonic_ms() -> float:
    """CLOCK_MONOTONIC in ms: one clock for every process on the machine, so children can compare."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) / 1e6
