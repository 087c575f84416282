"""Starting the mesh's processes and waiting until each is ready. Used by `make run` and mesh tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from devrun.envoy_config import EdgeConfig, envoy_command, write_bootstrap
from devrun.processes import ManagedProcess
from devrun.readiness import envoy_ready, grpc_serving

ROOT = Path(__file__).resolve().parent.parent


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `overrides` on top, as every child gets it."""
    env = dict(os.environ)
    env.update(overrides)
    return env


def spawn_grpc_service(
    name: str, module: str, env: Mapping[str, str], log_path: Path, cwd: Path = ROOT
) -> ManagedProcess:
    """Runs `python -m module` in `cwd` and returns at once (see `start_grpc_service`).

    The child reads `.env` from `cwd` for anything `env` does not set; tests pass a clean folder.
    """
    return ManagedProcess(name, [sys.executable, "-m", module], log_path, env=env, cwd=cwd).start()


def spawn_envoy(config: EdgeConfig, config_path: Path, log_path: Path) -> ManagedProcess:
    """Writes the bootstrap for `config` to `config_path` and runs Envoy; returns at once."""
    write_bootstrap(config, config_path)
    return ManagedProcess("envoy", envoy_command(config_path), log_path, cwd=ROOT).start()


def start_grpc_service(
    name: str,
    module: str,
    address: str,
    env: Mapping[str, str],
    log_path: Path,
    timeout: float = 60.0,
    cwd: Path = ROOT,
) -> ManagedProcess:
    """Runs `python -m module` and waits until its gRPC health check says SERVING.

    Args:
        name: Short name for messages.
        module: The module to run (`agent_svc`).
        address: `host:port` the service listens on (it must match what `env` configures).
        env: The child's full environment.
        log_path: Where stdout and stderr go.
        timeout: Seconds to wait for SERVING.
        cwd: Working directory of the child.

    Raises:
        StartupError: The process exited or did not become healthy in time (with its log tail).
    """
    proc = spawn_grpc_service(name, module, env, log_path, cwd)
    try:
        proc.wait_until(lambda: grpc_serving(address), timeout, f"SERVING on {address}")
    except BaseException:
        proc.stop()
        raise
    return proc


def start_envoy(
    config: EdgeConfig, config_path: Path, log_path: Path, timeout: float = 30.0
) -> ManagedProcess:
    """Like `spawn_envoy`, then waits until Envoy's admin `/ready` says so."""
    proc = spawn_envoy(config, config_path, log_path)
    try:
        proc.wait_until(lambda: envoy_ready(config.admin_port), timeout, "ready")
    except BaseException:
        proc.stop()
        raise
    return proc
