#!/usr/bin/env bash
# Regenerates the Rust bindings of wit/plugin.wit that are checked in:
# sdk/src/bindings/<world>.rs, one per world (the SDK's traits sit on
# them; a fixture that must give answers the SDK would refuse uses them raw).
#
# Checked in, not made by `wit_bindgen::generate!` at build time: the macro
# brings wit-bindgen's parser and encoder chain (wasmparser, wit-parser,
# wit-component, syn, ...), which every build compiled twice, once for the
# proxy's tests and once more in host/build.rs's nested plugin build, where
# it held up the default bundle (about 25 s of a 41 s cold nested build).
#
# Run it after any change to wit/plugin.wit, comments included: the SDK's
# test `bindings::tests::match_the_wit` fails until then. It needs the
# wit-bindgen CLI of the same version as the runtime crate in Cargo.toml:
#   cargo install --locked wit-bindgen-cli@0.63.0
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.63.0
if [ "$(wit-bindgen --version 2>/dev/null)" != "wit-bindgen-cli $version" ]; then
    echo "needs wit-bindgen-cli $version: cargo install --locked wit-bindgen-cli@$version" >&2
    exit 1
fi
wit=wit/plugin.wit
sum=$(sha256sum "$wit" | cut -d' ' -f1)
# The package's version, which the `--with` keys name.
pkg=$(sed -n 's/^package bbproxy:plugin@\(.*\);$/\1/p' "$wit")
[ -n "$pkg" ] || { echo "no 'package bbproxy:plugin@X;' line in $wit" >&2; exit 1; }

# generate OUT WORLD [wit-bindgen options...]: one world's bindings into OUT,
# under a first line that records the WIT they were made from.
generate() {
    local out=$1 world=$2
    shift 2
    local tmp
    tmp=$(mktemp -d)
    wit-bindgen rust wit --world "$world" --out-dir "$tmp" "$@" >/dev/null 2>&1
    {
        echo "// From wit/plugin.wit sha256 $sum by sdk/bindings.sh; do not edit."
        cat "$tmp/$world.rs"
    } >"$out"
    rm -rf "$tmp"
    rustfmt --edition 2024 "$out"
}

mkdir -p sdk/src/bindings
# The router's bindings hold every shared type (used by the router or not);
# the other worlds reuse them, so each WIT type is one Rust type.
generate sdk/src/bindings/router.rs router \
    --generate-unused-types -d PartialEq \
    --pub-export-macro --export-macro-name export_router \
    --default-bindings-module bbproxy_sdk::bindings::router
for world in balancer breaker filter; do
    generate "sdk/src/bindings/$world.rs" "$world" \
        --with "bbproxy:plugin/types@$pkg=crate::bindings::router::bbproxy::plugin::types" \
        --with "bbproxy:plugin/host@$pkg=crate::bindings::router::bbproxy::plugin::host" \
        --pub-export-macro --export-macro-name "export_$world" \
        --default-bindings-module "bbproxy_sdk::bindings::$world"
done
echo "regenerated the bindings of $wit ($sum)"
