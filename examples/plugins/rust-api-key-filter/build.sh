#!/usr/bin/env bash
# Builds the rust-api-key-filter component:
#   ./build.sh [OUT_DIR]     -> OUT_DIR/example_rust_api_key_filter.wasm (default: ./target)
# (see ../build-rust.sh; needs rustup's wasm32-wasip2 target)
exec "$(dirname "$0")/../build-rust.sh" "$(cd "$(dirname "$0")" && pwd)" "$@"
