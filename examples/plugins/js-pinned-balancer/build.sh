#!/usr/bin/env bash
# Builds the JavaScript balancer component with componentize-js (npm):
#   ./build.sh [OUT_DIR]     -> OUT_DIR/js_pinned_balancer.wasm (default: ./target)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wit=$here/../../../wit
out=${1:-$here/target}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm not found; install them (Debian: apt-get install nodejs npm)" >&2
    exit 127
fi
cd "$here"
[ -x node_modules/.bin/componentize-js ] || npm ci --no-audit --no-fund
mkdir -p "$out"
# `-d http fetch-event`: without it the component imports wasi:http, which the
# proxy does not provide.
node_modules/.bin/componentize-js --wit "$wit" --world-name balancer \
    -d http fetch-event -o "$out/js_pinned_balancer.wasm" app.js
echo "built $out/js_pinned_balancer.wasm"
