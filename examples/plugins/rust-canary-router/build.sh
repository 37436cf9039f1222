#!/usr/bin/env bash
# Builds the rust-canary-router component with cargo (the plugin profile of the workspace:
# opt-level s, LTO, panic=abort, stripped):
#   ./build.sh [OUT_DIR]     -> OUT_DIR/example_rust_canary_router.wasm (default: ./target)
#
# Needs rustup's wasm32-wasip2 target: rustup target add wasm32-wasip2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/target}
# In the repository, so rust-toolchain.toml picks the toolchain.
cd "$root"
if ! rustc --print sysroot >/dev/null 2>&1 || [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    echo "the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2" >&2
    exit 127
fi
cargo build --target wasm32-wasip2 --profile plugin -p example-rust-canary-router
mkdir -p "$out"
cp "${CARGO_TARGET_DIR:-$root/target}/wasm32-wasip2/plugin/example_rust_canary_router.wasm" "$out/example_rust_canary_router.wasm"
echo "built $out/example_rust_canary_router.wasm"
