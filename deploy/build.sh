#!/usr/bin/env bash
# The production build of bbproxy: the `dist` profile (release with
# whole-program LTO) guided by the committed profile of a real load
# (deploy/bbproxy.profdata.xz, written by `bench/pgo.sh --save`). The
# Dockerfile and bench/run.sh build with this script.
#
#   deploy/build.sh [--no-pgo] [--profdata FILE]
#
# Prints the binary's path: target/pgo/bbproxy (profile-guided), or with
# --no-pgo the plain dist build, target/dist/bbproxy. --profdata uses
# another profile (an .xz or a merged .profdata), as bench/pgo.sh does
# with the one it has just trained. Builds under the repository's target/
# whatever CARGO_TARGET_DIR says, so the printed path is where the binary
# is. Needs xz (Debian package xz-utils).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
pgo=1
profdata="$root/deploy/bbproxy.profdata.xz"
usage() { sed -n '7p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --no-pgo) pgo=0; shift ;;
        --profdata)
            [ $# -ge 2 ] || { echo "deploy/build.sh: --profdata needs a file" >&2; usage >&2; exit 2; }
            # Relative to where the script was called from, as a user
            # means it (the script works from the repository's root).
            case "$2" in /*) profdata="$2" ;; *) profdata="$PWD/$2" ;; esac
            shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "deploy/build.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$root"
if [ "$pgo" = 0 ]; then
    cargo build --profile dist --locked --quiet -p bbproxy --target-dir "$root/target" >&2
    echo "$root/target/dist/bbproxy"
    exit 0
fi

[ -f "$profdata" ] || { echo "deploy/build.sh: no profile at $profdata (build without one: --no-pgo)" >&2; exit 1; }
out="$root/target/pgo"
mkdir -p "$out"
# The profile is used from a path of its own, so the build's flags (and so
# cargo's cache) stay the same whichever file it came from; it is replaced
# only when it changed, as rustc lists it among every crate's inputs (a
# new file's date rebuilds them all).
used="$out/used.profdata"
case "$profdata" in
    *.xz)
        command -v xz >/dev/null || { echo "deploy/build.sh: xz is missing (Debian package xz-utils)" >&2; exit 1; }
        xz -dc "$profdata" >"$used.tmp" ;;
    *) cp "$profdata" "$used.tmp" ;;
esac
if cmp -s "$used.tmp" "$used"; then
    rm "$used.tmp"
else
    mv "$used.tmp" "$used"
fi

# --target: RUSTFLAGS then reach only the proxy's own code and its
# dependencies, not build scripts and proc macros (host/build.rs runs
# wasmtime to precompile the default bundle; it needs no profile). The
# bundle's nested wasm build drops RUSTFLAGS (host/build/nested.rs). A
# function changed since the profile was taken is built as without one.
# A RUSTFLAGS of the caller's applies too, as it does to --no-pgo.
host="$(rustc -vV | sed -n 's/^host: //p')"
if ! RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$used" CARGO_INCREMENTAL=0 \
    cargo build --profile dist --locked --quiet -p bbproxy --target "$host" \
    --target-dir "$root/target/pgo-use" >&2; then
    echo "deploy/build.sh: the profile-guided build failed; if rustc could not read the profile, train a new one (bench/pgo.sh --save) or build without it (--no-pgo)" >&2
    exit 1
fi
cp "$root/target/pgo-use/$host/dist/bbproxy" "$out/bbproxy"
echo "$out/bbproxy"
