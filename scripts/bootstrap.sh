#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, and nothing when it is already there.
# Usage: scripts/bootstrap.sh [run|dev]   (dev also installs linters, test tools and buf)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
venv=.venv
stamp_dir=$venv/.stamps

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}
python_bin=$(find_python || true)
if [ -z "$python_bin" ] && command -v apt-get >/dev/null 2>&1; then
  # Debian 12 ships Python 3.11; install it when the machine has none.
  echo "bootstrap: installing Python 3.11 from Debian"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv
  python_bin=$(find_python || true)
fi
if [ -z "$python_bin" ]; then
  echo "bootstrap: Python 3.11 is required (python3.11 or python3 on PATH)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv with $python_bin"
  "$python_bin" -m venv "$venv"
fi
mkdir -p "$stamp_dir"

# Debian packages the project uses at run or test time (listed in scripts/apt-packages.txt).
if [ -s scripts/apt-packages.txt ]; then
  missing=()
  while read -r pkg; do
    [ -z "$pkg" ] || [[ "$pkg" == \#* ]] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done < scripts/apt-packages.txt
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# The open-source LiveKit server, built from the Go module proxy into the git-ignored tools folder.
# Rebuilt only when missing or when the pin below changes (the stamp records what was built).
livekit_version=v1.13.5
tools_bin=.tools/bin
livekit_stamp=$tools_bin/livekit-server.version
if [ ! -x "$tools_bin/livekit-server" ] || [ "$(cat "$livekit_stamp" 2>/dev/null)" != "$livekit_version" ]; then
  if command -v go >/dev/null 2>&1; then
    echo "bootstrap: building the LiveKit server $livekit_version with $(go version | cut -d' ' -f3) (about 2 minutes)"
    mkdir -p "$tools_bin"
    build_dir=$(mktemp -d)
    GOBIN="$build_dir" go install "github.com/livekit/livekit-server/cmd/server@$livekit_version" \
      || { rm -rf "$build_dir"; echo "bootstrap: building the LiveKit server failed (see above)" >&2; exit 1; }
    mv "$build_dir/server" "$tools_bin/livekit-server"
    rm -rf "$build_dir"
    echo "$livekit_version" > "$livekit_stamp"
  else
    echo "bootstrap: Go 1.26+ is not installed, so the LiveKit server cannot be built." >&2
    echo "bootstrap: install Go (https://go.dev/dl/) and run this again; until then make run has no LiveKit" >&2
    echo "bootstrap: server (calls cannot connect) and the tests that need one fail." >&2
  fi
fi

# dev adds the optional Piper voice (GPL-3.0) so its tests run in CI; `run` never installs it.
extras="run"; [ "$profile" = "dev" ] && extras="dev,piper"
py_stamp="$stamp_dir/pip-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$py_stamp" ]; then
  echo "bootstrap: installing Python packages ($extras)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"
  touch "$py_stamp"
fi

if [ "$profile" = "dev" ]; then
  npm_stamp="$stamp_dir/npm-$(sha256sum package-lock.json | cut -c1-16)"
  if [ ! -f "$npm_stamp" ] || [ ! -x node_modules/.bin/buf ]; then
    echo "bootstrap: installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
    touch "$npm_stamp"
  fi
fi
# The browser page (web/): its build tools, generator plugin and test driver. `run` needs it too (it builds the page).
web_stamp="$stamp_dir/npm-web-$(sha256sum web/package-lock.json | cut -c1-16)"
if [ "$profile" = "run" ] && ! command -v npm >/dev/null 2>&1; then
  echo "bootstrap: npm not found; make run will start without the call page (install Node.js 20+ for it)" >&2
elif [ ! -f "$web_stamp" ] || [ ! -x web/node_modules/.bin/vite ]; then
  echo "bootstrap: installing npm packages for web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  touch "$web_stamp"
fi
