"""The voice worker as a process (`python -m voice_worker start`), for `make run`, tests and benchmarks.

It is ready when LiveKit has registered it: LiveKit Agents logs "registered worker" once the server
accepted it on `/agent`, and only then can a call be dispatched to it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from devrun.launch import ROOT
from devrun.processes import ManagedProcess

REGISTERED_MARK = "registered worker"
# Loading the speech models and registering takes a few seconds; a cold machine may need more.
START_TIMEOUT_SECONDS = 90.0


def spawn_worker(env: Mapping[str, str], log_path: Path, cwd: Path = ROOT) -> ManagedProcess:
    """Runs the worker (`start`: production mode, no file watching); returns at once."""
    return ManagedProcess(
        "voice_worker", [sys.executable, "-m", "voice_worker", "start"], log_path, env=env, cwd=cwd
    ).start()


def worker_registered(log_path: Path, offset: int = 0) -> bool:
    """True once the worker's log, from byte `offset` on, says LiveKit registered it."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            return REGISTERED_MARK.encode() in log.read()
    except OSError:
        return False


def _log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def start_worker(
    env: Mapping[str, str], log_path: Path, cwd: Path = ROOT, timeout: float = START_TIMEOUT_SECONDS
) -> ManagedProcess:
    """Like `spawn_worker`, then waits until LiveKit registered it.

    Only what this process appends to the log counts, not a mark left by an earlier run.
    """
    offset = _log_size(log_path)
    proc = spawn_worker(env, log_path, cwd)
    try:
        proc.wait_until(lambda: worker_registered(log_path, offset), timeout, "registered with LiveKit")
    except BaseException:
        proc.stop()
        raise
    return proc
