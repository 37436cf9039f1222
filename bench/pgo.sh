#!/usr/bin/env bash
# Profile-guided build of bbproxy: an instrumented build serves the bench's
# five scenarios for a few seconds each (bench/run.sh, one round), and the
# profile it writes guides a second build. See bench/README.md ("PGO").
#
#   bench/pgo.sh [--profile dist|release] [--duration S] [--save]
#
# Writes target/pgo/bbproxy (and target/pgo/bbproxy.profdata); --save also
# writes the profile where the production build reads it
# (deploy/bbproxy.profdata.xz, used by deploy/build.sh; dist only), once the
# build with it has succeeded. Uses target/pgo-gen and target/pgo-use as
# target directories, so the usual target/dist stays as it is; with the dist
# profile each build is a cold LTO build (about 25 minutes on two cores).
# Needs what bench/run.sh needs, plus llvm-profdata (`rustup component add
# llvm-tools`).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
profile=dist
duration=5
save=0
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --save) save=1; shift ;;
        -h|--help) sed -n '6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/pgo.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$profile" in dist|release) ;; *) echo "bench/pgo.sh: --profile is dist or release, got '$profile'" >&2; exit 2 ;; esac
case "$duration" in ''|*[!0-9]*|0) echo "bench/pgo.sh: --duration takes a positive integer, got '$duration'" >&2; exit 2 ;; esac
# The production build is the dist profile: a profile of the release
# build's code would guide it less well.
if [ "$save" = 1 ] && [ "$profile" != dist ]; then
    echo "bench/pgo.sh: --save keeps a profile of the dist build only" >&2
    exit 2
fi
if [ "$save" = 1 ] && ! command -v xz >/dev/null; then
    echo "bench/pgo.sh: --save needs xz (Debian package xz-utils)" >&2
    exit 1
fi

# The repository's toolchain (rust-toolchain.toml), whatever the caller's
# directory: llvm-profdata must be the one of the LLVM that builds.
host="$(cd "$root" && rustc -vV | sed -n 's/^host: //p')"
profdata="$(cd "$root" && rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "bench/pgo.sh: llvm-profdata is missing; install it with: rustup component add llvm-tools" >&2
    exit 1
fi

out="$root/target/pgo"
raw="$out/raw"
mkdir -p "$out"
rm -rf "$raw"

# --target, as in deploy/build.sh (which says why): the profile flags reach
# the proxy's code and its dependencies, not build scripts.
build() {
    local flags="$1" dir="$2"
    (cd "$root" && RUSTFLAGS="$flags" CARGO_INCREMENTAL=0 \
        cargo build --profile "$profile" --quiet -p bbproxy --target "$host" --target-dir "$dir")
}

echo "bench/pgo.sh: instrumented build ($profile)..." >&2
build "-Cprofile-generate=$raw" "$root/target/pgo-gen"
cp "$root/target/pgo-gen/$host/$profile/bbproxy" "$out/bbproxy-instrumented"

# The instrumented binary writes its profile when it exits; bench/run.sh
# ends it with SIGTERM, which bbproxy answers with a clean exit.
echo "bench/pgo.sh: training (bench/run.sh, one round of each scenario)..." >&2
BBPROXY_BIN="$out/bbproxy-instrumented" "$root/bench/run.sh" --rounds 1 --duration "$duration" \
    --scenarios "h1 h1-64k tls tls-new h2" --peers "bbproxy" >&2
if ! compgen -G "$raw/*.profraw" >/dev/null; then
    echo "bench/pgo.sh: the instrumented bbproxy wrote no profile into $raw" >&2
    exit 1
fi
"$profdata" merge -o "$out/bbproxy.profdata" "$raw"

echo "bench/pgo.sh: optimised build ($profile, with the profile)..." >&2
rm -f "$out/bbproxy-instrumented"
if [ "$profile" = dist ]; then
    # The production build's own script, with the profile just trained.
    "$root/deploy/build.sh" --profdata "$out/bbproxy.profdata" >/dev/null
else
    build "-Cprofile-use=$out/bbproxy.profdata" "$root/target/pgo-use"
    cp "$root/target/pgo-use/$host/$profile/bbproxy" "$out/bbproxy"
fi
echo "bench/pgo.sh: built $out/bbproxy" >&2
# Saved only once a build with it succeeded: a profile the production
# build cannot use never replaces the committed one. Written beside it and
# renamed, so the file is never seen half written (a commit made while xz
# ran once took a truncated profile).
if [ "$save" = 1 ]; then
    tmp="$root/deploy/bbproxy.profdata.xz.tmp"
    # A failed write, or a signal while xz runs, leaves no partial file
    # behind for a commit to take.
    trap 'rm -f "$tmp"' EXIT
    trap 'exit 1' INT TERM HUP
    if ! xz -9 -c "$out/bbproxy.profdata" >"$tmp"; then
        echo "bench/pgo.sh: could not write the profile; deploy/ is unchanged" >&2
        exit 1
    fi
    mv "$tmp" "$root/deploy/bbproxy.profdata.xz"
    trap - EXIT INT TERM HUP
    echo "bench/pgo.sh: saved the profile as deploy/bbproxy.profdata.xz" >&2
fi
echo "$out/bbproxy"
