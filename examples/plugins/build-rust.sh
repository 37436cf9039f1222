#!/usr/bin/env bash
# Builds one Rust example component with cargo (the workspace's plugin
# profile: opt-level s, LTO, panic=abort, stripped). Each Rust example's
# build.sh calls this with its directory name:
#   build-rust.sh EXAMPLE_DIR [OUT_DIR]   -> OUT_DIR/example_<name>.wasm (default: EXAMPLE_DIR/target)
#
# Needs rustup's wasm32-wasip2 target: rustup target add wasm32-wasip2
set -euo pipefail
plugins=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$plugins/../.." && pwd)
name=$(basename "$1")
out=${2:-$plugins/$name/target}
package="example-$name"
file="$(echo "$package" | tr - _).wasm"
# In the repository, so rust-toolchain.toml picks the toolchain.
cd "$root"
if ! rustc --print sysroot >/dev/null 2>&1 || [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    echo "the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2" >&2
    exit 127
fi
cargo build --target wasm32-wasip2 --profile plugin -p "$package"
mkdir -p "$out"
cp "${CARGO_TARGET_DIR:-$root/target}/wasm32-wasip2/plugin/$file" "$out/$file"
echo "built $out/$file"
