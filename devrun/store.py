"""The embedded MongoDB-compatible store (nx-27017): a real wire-protocol server over SQLite."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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
