"""`python -m voice_worker simulate` as a real process pointed at a test mesh, and a look into its outbox."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from devrun.processes import ManagedProcess
from tests.support.mesh import Mesh
from voice_worker.outbox import SUFFIX
from voice_worker.segments import Segment


def worker_env(mesh: Mesh, outbox: Path, **extra: str) -> dict[str, str]:
    """The mesh's environment (JWT secret, chat_svc/agent_svc addresses) plus the worker's own.

    Offline providers on purpose: the mesh's LiveKit stand-in credentials would otherwise make
    `auto` choose the cloud.
    """
    env = dict(mesh.env)
    env.update(
        {
            "VOICE_WORKER_PROVIDERS": "offline",
            "VOICE_WORKER_OUTBOX_DIR": str(outbox),
            "VOICE_WORKER_RETRY_INITIAL_SECONDS": "0.1",
            "VOICE_WORKER_RETRY_MAX_SECONDS": "0.5",
            "VOICE_WORKER_RPC_TIMEOUT_SECONDS": "2",
            "VOICE_WORKER_FLUSH_TIMEOUT_SECONDS": "5",
            "LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def start_simulate(
    name: str,
    env: dict[str, str],
    *,
    conversation_id: str,
    wav: Path,
    out: Path,
    log_path: Path,
    cwd: Path,
) -> ManagedProcess:
    """Starts `python -m voice_worker simulate ...` in its own process group (SIGKILL reaches all of it)."""
    args = [
        sys.executable,
        "-m",
        "voice_worker",
        "simulate",
        "--conversation",
        conversation_id,
        "--wav",
        str(wav),
        "--out",
        str(out),
    ]
    return ManagedProcess(name, args, log_path, env=env, cwd=cwd).start()


@dataclass(frozen=True)
class Queued:
    """A segment waiting in an outbox file, in the order it will be sent."""

    file: str
    segment: Segment


def queued(outbox: Path) -> list[Queued]:
    """What the worker's outbox files hold right now, read without taking their lock.

    SQLite in WAL mode lets this reader look while the worker writes; it never blocks the worker.
    """
    found: list[Queued] = []
    for path in sorted(outbox.glob(f"*{SUFFIX}")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
            try:
                rows = db.execute("SELECT body FROM pending ORDER BY position").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            continue  # just created, schema not written yet
        found += [Queued(path.name, Segment.from_json(body)) for (body,) in rows]
    return found
