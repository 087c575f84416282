#!/usr/bin/env bash
# buf breaking (WIRE_JSON) against the newest release tag, or else the previous commit of main.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
against=$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || true)
if [ -z "$against" ]; then
  if ! git rev-parse -q --verify HEAD~1 >/dev/null; then
    echo "buf breaking: no earlier commit to compare with (first commit); nothing to check"
    exit 0
  fi
  against=$(git rev-parse HEAD~1)
fi
# The baseline may predate a module (e.g. before the contracts existed): then there is nothing to break.
if ! git cat-file -e "$against:buf.yaml" 2>/dev/null; then
  echo "buf breaking: $against has no buf workspace; nothing to check"
  exit 0
fi
echo "buf breaking: against $against"
"$buf" breaking --against ".git#ref=$against"
