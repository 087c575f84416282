"""Child processes of the mesh, each in its own process group so a stop leaves no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devrun.ports import port_open


class StartupError(RuntimeError):
    """A child process exited or did not become ready in time."""


@dataclass
class ManagedProcess:
    """A started child process with its log file.

    Attributes:
        name: Short name used in messages.
        args: The command line.
        log_path: Where stdout and stderr go.
    """

    name: str
    args: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # Some servers need SIGTERM twice (see `stop`); None sends it once.
    repeat_term_after: float | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                list(self.args),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,  # own process group: signals reach its children too
            )
        finally:
            log_file.close()
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise StartupError(f"{self.name} was not started")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls `ready` until it holds; fails fast if the process dies meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise StartupError(f"{self.name} exited before {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise StartupError(f"{self.name} not {what} after {timeout:.0f}s:\n{self.log_tail()}")

    def wait_for_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.wait_until(lambda: port_open(host, port), timeout, f"listening on {host}:{port}")

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the whole group (again after `repeat_term_after`), SIGKILL after `timeout`.

        Returns the exit code.
        """
        if self.popen is None:
            return None
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                if self.repeat_term_after is not None:
                    try:
                        self.popen.wait(self.repeat_term_after)
                    except subprocess.TimeoutExpired:
                        self.signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Children that outlived the leader would be orphans: end the group for good.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL to the whole group (crash simulation) and reap the leader."""
        if self.popen is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)
