"""The embedded MongoDB-compatible store (nx-27017): a real wire-protocol server over SQLite."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from devrun.ports import free_port
from devrun.processes import ManagedProcess


def store_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """Command line for nx-27017 keeping one SQLite file per database under `data_dir`."""
    exe = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or "nx-27017"
    return [
        exe,
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--log-file",
        str(data_dir / "nx-27017.log"),
        "--pid-file",
        str(data_dir / "nx-27017.pid"),
    ]


def start_store(data_dir: Path, port: int, log_path: Path, host: str = "127.0.0.1") -> ManagedProcess:
    """Starts nx-27017 and waits until it accepts connections."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess("store", store_command(data_dir, port, host), log_path).start()
    proc.wait_for_port(host, port, timeout=30)
    return proc


class EmbeddedStore:
    """An nx-27017 process on an ephemeral loopback port, for tests and benchmarks."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?serverSelectionTimeoutMS=5000"

    def start(self) -> None:
        self.process = start_store(self.data_dir, self.port, self.log_path, self.host)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stops and starts the store on the same port and data (for fault tests)."""
        self.stop()
        self.start()
