"""A logged exception keeps its traceback but never the values of its frames' local variables.

Run in a child process: `logs.configure` sets process-wide logging, which a test must not leave behind.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROGRAM = """
import structlog
from servicekit import logs

def fails_holding_a_secret():
    authorization = "eyJ-secret-webhook-signature"
    raise ValueError(f"bad header of {len(authorization)} characters")

logs.configure("INFO", "json", service="test")
try:
    fails_holding_a_secret()
except ValueError:
    structlog.get_logger("test").error("rpc failed unexpectedly", exc_info=True)
"""


def test_tracebacks_leave_locals_out() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    line = done.stderr.strip().splitlines()[-1]
    assert "eyJ-secret" not in line
    (error,) = json.loads(line)["exception"]
    assert error["exc_type"] == "ValueError"
    assert error["frames"][-1]["name"] == "fails_holding_a_secret"
