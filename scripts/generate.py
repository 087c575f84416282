"""Produce everything derived from protos/: Python code with stubs and the Envoy descriptor set.

Run as `python scripts/generate.py` (or `make generate`). The output is committed; CI runs this
again and fails on any difference, so the output must depend only on the inputs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
PY_OUT = ROOT / "syntera"
DESCRIPTOR_SET = ROOT / "envoy" / "syntera.pb"
BUF = ROOT / "node_modules" / ".bin" / "buf"
WEB = ROOT / "web"

# The googleapis files our contracts import, plus the google.rpc types Envoy needs to print
# error details (ErrorInfo, BadRequest) as JSON.
GOOGLEAPIS_FILES = (
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "google/api/httpbody.proto",
    "google/rpc/code.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
)


def _site_packages_proto_root() -> Path:
    import google.api.annotations_pb2 as annotations  # shipped by googleapis-common-protos

    return Path(annotations.__file__).resolve().parent.parent.parent


def copy_googleapis() -> None:
    source = _site_packages_proto_root()
    if THIRD_PARTY.exists():
        shutil.rmtree(THIRD_PARTY)
    for name in GOOGLEAPIS_FILES:
        target = THIRD_PARTY / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)


def run_protoc(args: list[str]) -> None:
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{THIRD_PARTY}", f"-I{well_known}", *args])
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def main() -> None:
    copy_googleapis()
    ours = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))

    if PY_OUT.exists():
        shutil.rmtree(PY_OUT)
    # The mypy plugins live next to this interpreter; PATH may not include the virtualenv.
    bin_dir = Path(sys.executable).parent
    run_protoc(
        [
            f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            f"--mypy_out={ROOT}",
            f"--mypy_grpc_out={ROOT}",
            *ours,
        ]
    )
    # Regular packages (not namespace packages) keep imports, mypy and setuptools simple.
    for folder in [PY_OUT, *(p for p in PY_OUT.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (PY_OUT / "py.typed").touch()

    DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
    rpc_types = [name for name in GOOGLEAPIS_FILES if name.startswith("google/rpc/")]
    run_protoc([f"--descriptor_set_out={DESCRIPTOR_SET}", "--include_imports", *ours, *rpc_types])
    print(f"generated {PY_OUT.relative_to(ROOT)}/ and {DESCRIPTOR_SET.relative_to(ROOT)}")
    generate_web_client()


def generate_web_client() -> None:
    """TypeScript client for the browser page (web/src/gen), from the same buf workspace.

    Skipped when web/ has no node_modules: the Python side must stay generatable without Node.
    """
    if not (WEB / "node_modules").is_dir() or not BUF.exists():
        print("skipped web/src/gen (run `npm ci` in web/ and at the root to generate it)")
        return
    subprocess.run([str(BUF), "generate", "--template", "web/buf.gen.yaml"], cwd=ROOT, check=True)
    print(f"generated {(WEB / 'src' / 'gen').relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
