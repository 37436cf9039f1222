#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 120 s each) with
# cargo-fuzz on nightly. Not part of CI (.ci/run only compiles the targets):
# a benchmark-style run whose result goes into the issue notes.
#   fuzz/run.sh [seconds-per-target [target...]]   (default: every target)
# Needs: rustup toolchain install nightly && cargo +nightly install cargo-fuzz.
# plugin_answer and upstream_response build the host, whose build script builds the default
# plugins for wasm32-wasip2: with nightly's wasm32-wasip2 if installed
# (rustup target add wasm32-wasip2 --toolchain nightly; not every nightly
# ships it), else with the pinned toolchain of rust-toolchain.toml.
# Artifacts go to $CARGO_TARGET_DIR/fuzz if that is set, else fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
targets=("${@:2}")
[ ${#targets[@]} -gt 0 ] || targets=(config_parse plugin_answer upstream_response)
if ! rustup target list --toolchain nightly --installed | grep -qx wasm32-wasip2; then
    BBPROXY_PLUGIN_TOOLCHAIN="$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)"
    export BBPROXY_PLUGIN_TOOLCHAIN
    echo "nightly has no wasm32-wasip2: plugins build with $BBPROXY_PLUGIN_TOOLCHAIN"
fi
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-fuzz/target}"
for target in "${targets[@]}"; do
    features=()
    [ "$target" = config_parse ] || features=(--features answers)
    mkdir -p "fuzz/corpus/$target"
    # Seed the config target with the sample configs.
    [ "$target" = config_parse ] && cp examples/*.json "fuzz/corpus/$target/"
    echo "== $target: ${secs}s"
    cargo +nightly fuzz run --target-dir "$target_dir" "${features[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=4096
done
