#!/usr/bin/env bash
# Builds the Python router component with componentize-py (PyPI):
#   ./build.sh [OUT_DIR]     -> OUT_DIR/python_path_router.wasm (default: ./target)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wit=$here/../../../wit
out=${1:-$here/target}
if ! command -v componentize-py >/dev/null; then
    echo "componentize-py not found; install it with: pip install componentize-py==0.25.1" >&2
    exit 127
fi
mkdir -p "$out"
cd "$here"
componentize-py -d "$wit" -w router componentize app -o "$out/python_path_router.wasm"
echo "built $out/python_path_router.wasm"
