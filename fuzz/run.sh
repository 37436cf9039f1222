#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 120 s each) with
# cargo-fuzz on nightly. Not part of CI: a benchmark-style run whose result
# goes into the issue notes.
#   fuzz/run.sh [seconds-per-target]
# Needs: rustup toolchain install nightly && cargo +nightly install cargo-fuzz
# and, for plugin_answer (it builds the host, whose build script builds the
# default plugins): rustup target add wasm32-wasip2 --toolchain nightly
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
for target in config_parse plugin_answer; do
    features=()
    [ "$target" = plugin_answer ] && features=(--features answers)
    mkdir -p "fuzz/corpus/$target"
    # Seed the config target with the sample configs.
    [ "$target" = config_parse ] && cp examples/*.json "fuzz/corpus/$target/"
    echo "== $target: ${secs}s"
    cargo +nightly fuzz run "${features[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=4096
done
