"""The hashed lock files of every install: requirements/run.txt and dev.txt (bootstrap), image.txt
(the Containerfile).

pyproject.toml pins the direct dependencies only; their dependencies would float, so a fresh machine
could install something CI never ran. The lock files pin every package with the hashes of its files
(made by `uv pip compile`, universal: every platform's markers and wheels), and bootstrap installs
them with `pip install --require-hashes`.

    python scripts/lock.py           relock after changing the dependencies in pyproject.toml
    python scripts/lock.py --check   fail when pyproject.toml changed since the last relock (offline)

Relocking keeps every pin that still fits (uv prefers the versions already in the output file), so
only what the change needs moves; `--upgrade` lets everything move to the newest versions.

Each lock file starts with a fingerprint of the tables it was made from (requires-python,
dependencies, optional-dependencies). The check compares fingerprints without a network or a
resolver, so `make lint` and bootstrap can run it anywhere; a difference means "relock".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK_DIR = ROOT / "requirements"
# profile (bootstrap's argument, or `image` for the Containerfile) -> the extras it installs. `dev`
# adds the GPL Piper voice so CI runs its tests; `run` and `image` never have it (see pyproject.toml).
PROFILES = {"dev": ("dev", "piper"), "run": ("run",), "image": ("image",)}
FINGERPRINT_PREFIX = "# pyproject-dependencies-sha256: "
RELOCK = "python scripts/lock.py"


def fingerprint() -> str:
    """A hash of what the lock files are made from, and nothing else in pyproject.toml."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    tables = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def lock_path(profile: str) -> Path:
    return LOCK_DIR / f"{profile}.txt"


def compile_profile(profile: str, upgrade: bool) -> None:
    out = lock_path(profile)
    command = [
        sys.executable, "-m", "uv", "pip", "compile", str(PYPROJECT.relative_to(ROOT)),
        *[arg for extra in PROFILES[profile] for arg in ("--extra", extra)],
        "--universal", "--python-version", "3.11", "--generate-hashes",
        "--custom-compile-command", RELOCK,
        "--output-file", str(out.relative_to(ROOT)), "--quiet",
    ]  # fmt: skip
    if profile != "dev":
        # The running set is the tested set: every package shared with `dev` at dev's version.
        command += ["--constraint", str(lock_path("dev").relative_to(ROOT))]
    if upgrade:
        command.append("--upgrade")
    subprocess.run(command, cwd=ROOT, check=True)
    body = out.read_text()
    if body.startswith(FINGERPRINT_PREFIX):
        body = body.split("\n", 1)[1]
    out.write_text(f"{FINGERPRINT_PREFIX}{fingerprint()}\n{body}")


def stale_profiles() -> list[str]:
    expected = fingerprint()
    stale = []
    for profile in PROFILES:
        path = lock_path(profile)
        first = path.read_text().split("\n", 1)[0] if path.exists() else ""
        if first != f"{FINGERPRINT_PREFIX}{expected}":
            stale.append(profile)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the lock files are out of date")
    parser.add_argument("--upgrade", action="store_true", help="let every package move to its newest version")
    args = parser.parse_args()
    if args.check:
        stale = stale_profiles()
        if stale:
            names = ", ".join(str(lock_path(p).relative_to(ROOT)) for p in stale)
            print(
                f"lock: {names} not made from the dependencies now in pyproject.toml.\n"
                f"lock: run `{RELOCK}` or `make lock` (uv comes with the dev install), then commit\n"
                "lock: requirements/.",
                file=sys.stderr,
            )
            return 1
        print("lock files match pyproject.toml")
        return 0
    LOCK_DIR.mkdir(exist_ok=True)
    for profile in PROFILES:  # dev first: the others are constrained to it
        compile_profile(profile, args.upgrade)
        print(f"wrote {lock_path(profile).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
