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
# Run it after any change to wit/plugin.wit or wit/v0.2/plugin.wit,
# comments included: the SDK's
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
wit2=wit/v0.2/plugin.wit
sum2=$(sha256sum "$wit2" | cut -d' ' -f1)
# The package's version, which the `--with` keys name.
pkg=$(sed -n 's/^package bbproxy:plugin@\(.*\);$/\1/p' "$wit")
[ -n "$pkg" ] || { echo "no 'package bbproxy:plugin@X;' line in $wit" >&2; exit 1; }

# generate DIR OUT WORLD [wit-bindgen options...]: one world's bindings of
# the WIT package in DIR into OUT, under a first line that records the
# WIT they were made from (both files: 0.2.0 imports 0.1.1's interfaces).
generate() {
    local dir=$1 out=$2 world=$3
    shift 3
    local tmp
    tmp=$(mktemp -d)
    wit-bindgen rust "$dir" --world "$world" --out-dir "$tmp" "$@" >/dev/null 2>&1
    {
        echo "// From wit/plugin.wit sha256 $sum and wit/v0.2/plugin.wit sha256 $sum2 by sdk/bindings.sh; do not edit."
        cat "$tmp/$world.rs"
    } >"$out"
    rm -rf "$tmp"
    rustfmt --edition 2024 "$out"
}

mkdir -p sdk/src/bindings
# The router's bindings hold every shared type (used by the router or not);
# the other worlds reuse them, so each WIT type is one Rust type.
generate wit sdk/src/bindings/router.rs router \
    --generate-unused-types -d PartialEq \
    --pub-export-macro --export-macro-name export_router \
    --default-bindings-module bbproxy_sdk::bindings::router
for world in balancer breaker filter; do
    generate wit "sdk/src/bindings/$world.rs" "$world" \
        --with "bbproxy:plugin/types@$pkg=crate::bindings::router::bbproxy::plugin::types" \
        --with "bbproxy:plugin/host@$pkg=crate::bindings::router::bbproxy::plugin::host" \
        --pub-export-macro --export-macro-name "export_$world" \
        --default-bindings-module "bbproxy_sdk::bindings::$world"
done
# The 0.2.0 worlds. Their imports of 0.1.1's
# interfaces map onto the bindings above, and the 0.2.0 router's bindings
# hold the `decisions` types for the other three.
mkdir -p sdk/src/bindings/v2
v1_types=crate::bindings::router::bbproxy::plugin
generate wit/v0.2 sdk/src/bindings/v2/router.rs router \
    --generate-unused-types -d PartialEq \
    --with "bbproxy:plugin/types@$pkg=$v1_types::types" \
    --with "bbproxy:plugin/host@$pkg=$v1_types::host" \
    --pub-export-macro --export-macro-name export_router_v2 \
    --default-bindings-module bbproxy_sdk::bindings::v2::router
# generate2 WORLD [options...]: a 0.2.0 world other than the router.
generate2() {
    local world=$1
    shift
    generate wit/v0.2 "sdk/src/bindings/v2/$world.rs" "$world" \
        --with "bbproxy:plugin/types@$pkg=$v1_types::types" \
        --with "bbproxy:plugin/host@$pkg=$v1_types::host" \
        --pub-export-macro --export-macro-name "export_${world}_v2" \
        --default-bindings-module "bbproxy_sdk::bindings::v2::$world" "$@"
}
generate2 balancer \
    --with "bbproxy:plugin/decisions@0.2.0=crate::bindings::v2::router::bbproxy::plugin0_2_0::decisions"
generate2 breaker \
    --with "bbproxy:plugin/decisions@0.2.0=crate::bindings::v2::router::bbproxy::plugin0_2_0::decisions"
generate2 filter \
    --with "bbproxy:plugin/decisions@0.2.0=crate::bindings::v2::router::bbproxy::plugin0_2_0::decisions"
# wit-bindgen names its internal export macros after the world alone, and
# every #[macro_export] macro lives at the crate root: the 0.2.0 ones get a
# suffix so they do not collide with 0.1.1's.
sed -i -E 's/__export_world_(router|balancer|breaker|filter)_cabi/__export_world_\1_v2_cabi/g; s/__export_(router|balancer|breaker|filter)_impl/__export_\1_v2_impl/g' \
    sdk/src/bindings/v2/*.rs
# The answers of the per-request exports are freed at the next call instead
# of by a post-return call (sdk/defer_post_return.py says why).
python3 sdk/defer_post_return.py sdk/src/bindings/router.rs route
python3 sdk/defer_post_return.py sdk/src/bindings/filter.rs on-request on-response
python3 sdk/defer_post_return.py sdk/src/bindings/v2/router.rs route
python3 sdk/defer_post_return.py sdk/src/bindings/v2/filter.rs on-request on-response
rustfmt --edition 2024 sdk/src/bindings/router.rs sdk/src/bindings/filter.rs \
    sdk/src/bindings/v2/router.rs sdk/src/bindings/v2/filter.rs
echo "regenerated the bindings of $wit ($sum) and $wit2 ($sum2)"
