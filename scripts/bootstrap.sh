#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, and nothing when it is already there.
# Usage: scripts/bootstrap.sh [run|dev]
#   run: what `make run` needs to run the mesh: the locked Python packages of the `run` extra, espeak-ng,
#        the LiveKit server and the page's build tools. No test, lint or browser tools.
#   dev: everything `make test` needs on top: linters, type checkers, test tools, buf, Chromium.
# Python packages come from the hashed lock files in requirements/ (scripts/lock.py makes them), so a
# fresh machine installs exactly the versions CI tested.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
case "$profile" in
  run|dev) ;;
  *) echo "bootstrap: unknown profile '$profile' (run or dev)" >&2; exit 2 ;;
esac
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

# Debian packages: scripts/apt-packages.txt for running, scripts/apt-packages-dev.txt added for tests.
apt_lists=(scripts/apt-packages.txt)
[ "$profile" = "dev" ] && apt_lists+=(scripts/apt-packages-dev.txt)
missing=()
for list in "${apt_lists[@]}"; do
  while read -r pkg; do
    [ -z "$pkg" ] || [[ "$pkg" == \#* ]] && continue
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done < "$list"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
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

# Python packages from the profile's lock file (dev adds the optional GPL Piper voice so its tests run
# in CI; run never has it). A lock older than pyproject.toml's dependencies stops here: installing it
# would give the project versions it does not declare.
"$venv/bin/python" scripts/lock.py --check >/dev/null || { "$venv/bin/python" scripts/lock.py --check; exit 1; }
lock_hash() { cat "requirements/$1.txt" pyproject.toml | sha256sum | cut -c1-16; }
# dev's lock holds run's packages at the same versions, so a dev install serves `run` as it is.
if [ ! -f "$stamp_dir/pip-$profile-$(lock_hash "$profile")" ] && [ ! -f "$stamp_dir/pip-dev-$(lock_hash dev)" ]; then
  echo "bootstrap: installing Python packages (requirements/$profile.txt)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "requirements/$profile.txt"
  # The project itself, editable; its dependencies are all in the lock already.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp_dir/pip-$profile-$(lock_hash "$profile")"
fi

if [ "$profile" = "dev" ]; then
  npm_stamp="$stamp_dir/npm-$(sha256sum package-lock.json | cut -c1-16)"
  if [ ! -f "$npm_stamp" ] || [ ! -x node_modules/.bin/buf ]; then
    echo "bootstrap: installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
    touch "$npm_stamp"
  fi
  # bench token's reference server (the seed's Express stack) and its load generator (autocannon).
  bench_stamp="$stamp_dir/npm-bench-$(sha256sum bench/reference/package-lock.json | cut -c1-16)"
  if [ ! -f "$bench_stamp" ] || [ ! -d bench/reference/node_modules/autocannon ]; then
    echo "bootstrap: installing npm packages for bench/reference"
    (cd bench/reference && npm ci --no-audit --no-fund --loglevel=error)
    touch "$bench_stamp"
  fi
fi
# The browser page (web/). `run` needs its build tools (the page's dependencies, vite and typescript
# included); `dev` adds the lint tools and playwright-core, which drives Chromium in the web tests.
# A dev install serves `run` too; `npm ci` replaces node_modules, so `run` never shrinks one.
web_hash=$(sha256sum web/package-lock.json | cut -c1-16)
if ! command -v npm >/dev/null 2>&1; then
  if [ "$profile" = "run" ]; then
    echo "bootstrap: npm not found; make run will start without the call page (install Node.js 20+ for it)" >&2
  else
    echo "bootstrap: npm is required for the dev tools (install Node.js 20+)" >&2; exit 1
  fi
elif [ "$profile" = "dev" ]; then
  if [ ! -f "$stamp_dir/npm-web-dev-$web_hash" ] || [ ! -d web/node_modules/playwright-core ]; then
    echo "bootstrap: installing npm packages for web/"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp_dir/npm-web-dev-$web_hash"
  fi
elif [ ! -x web/node_modules/.bin/vite ] \
  || { [ ! -f "$stamp_dir/npm-web-run-$web_hash" ] && [ ! -f "$stamp_dir/npm-web-dev-$web_hash" ]; }; then
  echo "bootstrap: installing npm packages for web/ (without its dev tools)"
  (cd web && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
  touch "$stamp_dir/npm-web-run-$web_hash"
fi
