#!/usr/bin/env bash
# Builds the rust-latency-balancer component:
#   ./build.sh [OUT_DIR]     -> OUT_DIR/example_rust_latency_balancer.wasm (default: ./target)
# (see ../build-rust.sh; needs rustup's wasm32-wasip2 target)
exec "$(dirname "$0")/../build-rust.sh" "$(cd "$(dirname "$0")" && pwd)" "$@"
