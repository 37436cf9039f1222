#!/usr/bin/env bash
# Load benchmark: bbproxy next to nginx and haproxy, each on one pinned core,
# all proxying to the same backend on 127.0.0.1. See bench/README.md.
#
#   bench/run.sh [--rounds N] [--duration S] [--scenarios "h1 h1-64k tls tls-new h2"]
#                [--peers "direct bbproxy unpinned nginx haproxy"] [--connections C]
#   BBPROXY_BASELINE=path/to/other/bbproxy bench/run.sh --peers "bbproxy baseline nginx"
#   BBPROXY_BIN=target/dist/bbproxy bench/run.sh    # plain dist (deploy/build.sh --no-pgo)
#   bench/run.sh --scenarios h1 --peers "bbproxy policy nginx"
#   bench/run.sh --scenarios "h1 h1-64k" --peers "hyper-origin lean-origin mini-proxy bbproxy"
#
# Layout: the proxy under test on CPU 1 (`taskset -c 1`), wrk and the backend
# on CPU 0; `unpinned` is bbproxy again, on every CPU (one worker per CPU);
# `baseline` is another bbproxy binary (BBPROXY_BASELINE, e.g. one built from
# an older commit), pinned like `bbproxy`, for an A/B of two builds in one run;
# `policy` is bbproxy pinned, its domain with 20 routes (the request matches
# the last) and the built-in headers filter editing request and response,
# against `bbproxy`'s plain config (issue 18: at most 10 % more CPU);
# `hyper-origin` and `lean-origin` are no proxy but the backend itself on
# the proxy's CPU, with hyper's HTTP/1 server or its --lean one: what the
# server side of a request costs; `mini-proxy` is the backend's --proxy
# mode, the least a proxy on hyper does, in front of the same backend.
# Peers are interleaved (A B C A B C ...) over the rounds; each cell
# is the median of the rounds. The proxy's CPU time per request comes from
# /proc/<pid>/stat (utime + stime of the proxy and its children) before and
# after each measured run.
#
# It installs nothing: it says what is missing and how to get it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rounds=3
duration=5
warmup=1
connections=64
scenarios="h1 h1-64k tls tls-new h2"
peers="direct bbproxy unpinned nginx haproxy"
proxy_cpu=1
load_cpu=0

usage() { sed -n '5,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --scenarios) scenarios="$2"; shift 2 ;;
        --peers) peers="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$rounds" "$duration" "$connections"; do
    case "$n" in ''|*[!0-9]*|0) echo "--rounds, --duration and --connections take a positive integer, got '$n'" >&2; exit 2 ;; esac
done

# --- prerequisites -----------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package $2)"); }
need taskset util-linux
need python3 python3
need wrk wrk
case " $peers " in *" nginx "*) need nginx nginx ;; esac
case " $peers " in *" haproxy "*) need haproxy haproxy ;; esac
case " $scenarios " in *" tls"*|*" h2 "*) need openssl openssl ;; esac
case " $scenarios " in *" h2 "*) need h2load nghttp2-client ;; esac
case " $scenarios " in *" tls-new "*) need ab apache2-utils ;; esac
case " $peers " in
    *" baseline "*)
        [ -x "${BBPROXY_BASELINE:-}" ] || { echo "bench/run.sh: the baseline peer needs BBPROXY_BASELINE=<path of a bbproxy binary>" >&2; exit 2; } ;;
esac
if [ -n "${BBPROXY_BIN:-}" ] && [ ! -x "$BBPROXY_BIN" ]; then
    echo "bench/run.sh: BBPROXY_BIN=$BBPROXY_BIN is not an executable (bench/pgo.sh builds target/pgo/bbproxy)" >&2
    exit 2
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/run.sh: missing tools:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "install them with:" >&2
    echo "  apt-get install --no-install-recommends nginx haproxy wrk nghttp2-client apache2-utils openssl" >&2
    exit 1
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "bench/run.sh: needs 2 CPUs (proxy on CPU $proxy_cpu, load on CPU $load_cpu); nproc is $(nproc)" >&2
    exit 1
fi

# --- build -------------------------------------------------------------------
# bbproxy's production build (deploy/build.sh: dist, guided by the
# committed profile), the backend's dist build (Cargo.toml: release with
# LTO). BBPROXY_BIN names another bbproxy binary for the bbproxy,
# unpinned and policy rows (a plain dist build, one from another commit,
# bench/pgo.sh's instrumented one while it trains); then only the backend
# is built.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${BBPROXY_BIN:-}" ]; then
    echo "building the bench backend (profile dist); bbproxy is $BBPROXY_BIN..." >&2
    bbproxy_bin="$(cd "$(dirname "$BBPROXY_BIN")" && pwd)/$(basename "$BBPROXY_BIN")"
    bbproxy_build="$BBPROXY_BIN (BBPROXY_BIN)"
else
    echo "building bbproxy (deploy/build.sh; cold: ~17 min) and the bench backend (profile dist)..." >&2
    bbproxy_bin="$("$root/deploy/build.sh")"
    bbproxy_build="$bbproxy_bin (deploy/build.sh: dist, profile-guided)"
fi
(cd "$root" && cargo build --profile dist --quiet -p bbproxy-bench-backend)
backend_bin="$target_dir/dist/bbproxy-bench-backend"
for b in "$bbproxy_bin" "$backend_bin"; do
    [ -x "$b" ] || { echo "bench/run.sh: $b was not built (is CARGO_TARGET_DIR right?)" >&2; exit 1; }
done

# --- processes we start, ended on exit ----------------------------------------
work="$(mktemp -d)"
# bbproxy's config and the certificate it names live in a directory of
# their own: bbproxy watches the directories of the files its config names
# (to reload on a save), and the harness writes its logs and results (and
# h2load its per-request log, tens of thousands of lines a second) into
# $work. In $work, every one of those writes woke bbproxy's watcher and its
# reload thread on the proxy's CPU, which the h2 row counted as bbproxy's.
conf="$work/conf"
mkdir -p "$conf"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls until 127.0.0.1:$1 answers HTTP with 200, at most 10 s.
wait_http() {
    local port="$1" name="$2"
    for _ in $(seq 100); do
        if python3 - "$port" <<'EOF' 2>/dev/null; then return 0; fi
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", "/")
sys.exit(0 if c.getresponse().status == 200 else 1)
EOF
        sleep 0.1
    done
    echo "bench/run.sh: $name did not answer on 127.0.0.1:$port within 10 s" >&2
    [ -f "$work/$name.log" ] && tail -n 20 "$work/$name.log" >&2
    exit 1
}

# Checks that /64k through port $1 really is 65536 bytes.
check_64k() {
    python3 - "$1" <<'EOF' || { echo "bench/run.sh: $2 does not return 65536 bytes for /64k" >&2; exit 1; }
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", "/64k")
r = c.getresponse()
sys.exit(0 if r.status == 200 and len(r.read()) == 65536 else 1)
EOF
}

# --- TLS: one RSA 2048 certificate for every peer (as in bench-peers.md) ------
tls_wanted=0
case " $scenarios " in *" tls"*|*" h2 "*) tls_wanted=1 ;; esac
if [ "$tls_wanted" = 1 ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.local \
        -addext subjectAltName=DNS:bench.local \
        -keyout "$conf/key.pem" -out "$conf/cert.pem" 2>/dev/null
    cat "$conf/cert.pem" "$conf/key.pem" >"$work/haproxy.pem"
fi

# Checks that https://127.0.0.1:$1/ answers 200 and offers ALPN h2.
check_tls() {
    python3 - "$1" <<'EOF' || { echo "bench/run.sh: $2 does not answer HTTPS with ALPN h2 on 127.0.0.1:$1" >&2; exit 1; }
import sys, ssl, socket, http.client, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2", "http/1.1"])
for _ in range(100):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
            with ctx.wrap_socket(s) as t:
                ok = t.selected_alpn_protocol() == "h2"
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(1)
ctx.set_alpn_protocols(["http/1.1"])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), timeout=2, context=ctx)
c.request("GET", "/")
sys.exit(0 if ok and c.getresponse().status == 200 else 1)
EOF
}

# --- backend -----------------------------------------------------------------
# Starts the bench backend as $1 on CPU $2, the rest its options; sets
# launched_pid and launched_addr (the address it printed once bound).
launch_backend() {
    local name="$1" cpu="$2"
    shift 2
    taskset -c "$cpu" "$backend_bin" "$@" 127.0.0.1:0 >"$work/$name.addr" 2>"$work/$name.log" &
    launched_pid=$!
    pids+=("$launched_pid")
    for _ in $(seq 100); do [ -s "$work/$name.addr" ] && break; sleep 0.1; done
    launched_addr="$(head -n1 "$work/$name.addr")"
    [ -n "$launched_addr" ] || { echo "bench/run.sh: $name did not start" >&2; exit 1; }
}
launch_backend backend "$load_cpu"
backend_pid="$launched_pid"
backend_addr="$launched_addr"
backend_port="${backend_addr##*:}"
wait_http "$backend_port" backend

declare -A port tport pid
port[direct]="$backend_port"
pid[direct]="$backend_pid"

# --- peers -------------------------------------------------------------------
# $1: the row (bbproxy: pinned to the proxy CPU, one worker; unpinned: every
# CPU, a worker per CPU).
start_bbproxy() {
    local row="$1"
    port[$row]="$(free_port)"
    tport[$row]="$(free_port)"
    # access_log off: nginx and haproxy below log nothing either. A client
    # without SNI (wrk to an IP) gets the default domain's certificate.
    local https="" tls=""
    if [ "$tls_wanted" = 1 ]; then
        # Session resumption off, as in nginx and haproxy below: every
        # tls-new connection is a full handshake for every peer.
        https=", \"https\": \"127.0.0.1:${tport[$row]}\", \"tls_session_resumption\": false"
        tls=", \"tls\": {\"cert\": \"$conf/cert.pem\", \"key\": \"$conf/key.pem\"}"
    fi
    local policy="" pools=""
    if [ "$row" = policy ]; then
        policy=", \"routes\": [$(policy_routes)], \"filters\": [$(policy_filter)]"
        pools="\"upstreams\": { \"pool\": { \"backends\": [\"$backend_addr\"] } },"
    fi
    cat >"$conf/$row.json" <<EOF
{
  "listen": { "http": "127.0.0.1:${port[$row]}"$https },
  "admin": null,
  "access_log": false,
  $pools
  "domains": { "bench.local": { "backends": ["$backend_addr"]$tls$policy } },
  "default_domain": "bench.local"
}
EOF
    local cpus="$proxy_cpu" bin="$bbproxy_bin"
    [ "$row" = unpinned ] && cpus="0-$(($(nproc) - 1))"
    [ "$row" = baseline ] && bin="$BBPROXY_BASELINE"
    taskset -c "$cpus" "$bin" --config "$conf/$row.json" run >"$work/$row.log" 2>&1 &
    pid[$row]=$!
    pids+=("${pid[$row]}")
}

# The policy row's 20 routes: 19 that the bench's GETs to / and /64k do not
# match (each fails on its path prefix or its method), then a catch-all to
# the same backend as a pool, so every request is matched against all 20.
policy_routes() {
    local i sep=""
    for i in $(seq 1 19); do
        printf '%s{"match": {"path_prefix": "/api/v%d/", "method": ["POST", "PUT"]}, "upstream": "pool", "strip_prefix": "/api"}' "$sep" "$i"
        sep=", "
    done
    printf '%s{"match": {"path_prefix": "/"}, "upstream": "pool"}' "$sep"
}

# What operators add most: a request header for the backend, security
# headers on the response, and `Server` removed.
policy_filter() {
    printf '%s' '{"builtin": "headers", "config": {"request": {"set": {"x-request-source": "edge"}}, "response": {"set": {"x-frame-options": "DENY", "x-content-type-options": "nosniff"}, "remove": ["server"]}}}'
}

start_nginx() {
    port[nginx]="$(free_port)"
    tport[nginx]="$(free_port)"
    mkdir -p "$work/nginx"
    local tls_listen=""
    if [ "$tls_wanted" = 1 ]; then
        tls_listen="listen 127.0.0.1:${tport[nginx]} ssl http2;
        ssl_certificate $conf/cert.pem;
        ssl_certificate_key $conf/key.pem;
        ssl_session_cache off;
        ssl_session_tickets off;"
    fi
    # Upstream keep-alive (and nginx's per-connection request limits raised,
    # or it closes client and upstream connections every 1000 requests);
    # 64 KiB bodies stay in memory.
    cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    upstream backend {
        server $backend_addr;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${port[nginx]};
        $tls_listen
        http2_max_requests 1000000;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    taskset -c "$proxy_cpu" nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx.log" 2>&1 &
    pid[nginx]=$!
    pids+=("${pid[nginx]}")
}

start_haproxy() {
    port[haproxy]="$(free_port)"
    tport[haproxy]="$(free_port)"
    local tls_bind=""
    [ "$tls_wanted" = 1 ] && tls_bind="bind 127.0.0.1:${tport[haproxy]} ssl crt $work/haproxy.pem alpn h2,http/1.1 no-tls-tickets"
    cat >"$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    tune.ssl.cachesize 0
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:${port[haproxy]}
    $tls_bind
    default_backend be
backend be
    server s1 $backend_addr
EOF
    taskset -c "$proxy_cpu" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
    pid[haproxy]=$!
    pids+=("${pid[haproxy]}")
}

# Whether peer $1 serves plain HTTP/1.1 only (the backend and the rows
# made of it): no TLS checks or TLS rows for it.
plain_only() { case "$1" in direct|*-origin|mini-proxy) return 0 ;; esac; return 1; }

# hyper-origin, lean-origin: the bench backend itself (hyper's HTTP/1
# server) or its --lean mode (httparse and one writev, no hyper), pinned
# like a proxy: what an HTTP/1 server costs per request on its own.
# mini-proxy: the backend's --proxy mode, pinned like a proxy, in front of
# the same backend as every proxy: the least a proxy on hyper does.
start_origin() {
    local row="$1" mode=()
    case "$row" in
        lean-origin) mode=(--lean) ;;
        mini-proxy) mode=(--proxy "$backend_addr") ;;
    esac
    launch_backend "$row" "$proxy_cpu" "${mode[@]}"
    pid[$row]="$launched_pid"
    port[$row]="${launched_addr##*:}"
}

for p in $peers; do
    case "$p" in
        direct) ;;
        bbproxy|unpinned|baseline|policy) start_bbproxy "$p" ;;
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
        hyper-origin|lean-origin|mini-proxy) start_origin "$p" ;;
        *) echo "bench/run.sh: unknown peer '$p' (direct, bbproxy, unpinned, baseline, policy, nginx, haproxy, hyper-origin, lean-origin, mini-proxy)" >&2; exit 2 ;;
    esac
done
for p in $peers; do
    wait_http "${port[$p]}" "$p"
    case " $scenarios " in *" h1-64k "*) check_64k "${port[$p]}" "$p" ;; esac
    plain_only "$p" && continue
    if [ "$tls_wanted" = 1 ]; then check_tls "${tport[$p]}" "$p"; fi
done

# CPU ticks (utime + stime) of $1 and its direct children (nginx's worker).
cpu_ticks() {
    local total=0 p f
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        # Fields after the ")" that ends the command name: utime is the 12th,
        # stime the 13th.
        f="${f##*) }"
        set -- $f
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
hz="$(getconf CLK_TCK)"

# Resident memory (KiB) of $1 and its direct children (nginx's worker).
rss_kib() {
    local total=0 p v
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        v="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)" || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# The largest RSS of $1 seen every 200 ms until the file $2 appears; the
# result goes to $2.max. Bounded: at most 600 samples (2 minutes).
rss_peak() {
    local peak=0 v i
    for i in $(seq 600); do
        [ -e "$2" ] && break
        v="$(rss_kib "$1")"
        [ "$v" -gt "$peak" ] && peak="$v"
        sleep 0.2
    done
    echo "$peak" >"$2.max"
}

# Idle RSS of each peer: started, checked, nothing else served yet.
idle_rss="$work/idle_rss.tsv"
: >"$idle_rss"
for p in $peers; do
    [ "$p" = direct ] && continue
    printf '%s\t%s\n' "$p" "$(rss_kib "${pid[$p]}")" >>"$idle_rss"
done

path_of() { case "$1" in h1-64k) echo /64k ;; *) echo / ;; esac; }
for s in $scenarios; do
    case "$s" in h1|h1-64k|tls|tls-new|h2) ;; *) echo "bench/run.sh: unknown scenario '$s' (h1, h1-64k, tls, tls-new, h2)" >&2; exit 2 ;; esac
done

# wrk's latency in ms from a value like 1.05ms / 830.00us / 1.20s.
to_ms() {
    python3 -c '
import sys, re
m = re.fullmatch(r"([0-9.]+)(us|ms|s)", sys.argv[1])
f = {"us": 0.001, "ms": 1.0, "s": 1000.0}
print(f"{float(m.group(1)) * f[m.group(2)]:.3f}" if m else "nan")' "$1"
}

results="$work/results.tsv"
: >"$results"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
    for s in $scenarios; do
        for p in $peers; do
            case "$s" in tls|tls-new|h2) plain_only "$p" && continue ;; esac
            case "$s" in
                h1|h1-64k) url="http://127.0.0.1:${port[$p]}$(path_of "$s")" ;;
                *) url="https://127.0.0.1:${tport[$p]}/" ;;
            esac
            stop="$work/rss.stop"
            rm -f "$stop" "$stop.max"
            start_sampler() { rss_peak "${pid[$p]}" "$stop" & sampler=$!; }
            if [ "$s" = h2 ]; then
                # 16 connections x 4 streams (as in bench-peers.md);
                # percentiles from h2load's per-request log (column 3: us).
                timeout -k 5 $((warmup + 20)) taskset -c "$load_cpu" h2load -t1 -c16 -m4 -D"$warmup" "$url" >/dev/null
                before="$(cpu_ticks "${pid[$p]}")"
                start_sampler
                out="$(timeout -k 5 $((duration + 20)) taskset -c "$load_cpu" h2load -t1 -c16 -m4 -D"$duration" --log-file="$work/h2.log" "$url")"
                after="$(cpu_ticks "${pid[$p]}")"
                rps="$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")"
                total="$(awk '/^requests:/ {print $8}' <<<"$out")"
                read -r p50 p99 < <(python3 - "$work/h2.log" <<'EOF'
import sys
d = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.count("\t") >= 2)
q = lambda f: d[min(len(d) - 1, int(f * len(d)))] / 1000 if d else float("nan")
print(f"{q(0.5):.3f} {q(0.99):.3f}")
EOF
)
                errors="$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")"
            elif [ "$s" = tls-new ]; then
                # ab makes a fresh TLS session per connection (HTTP/1.0, no
                # keep-alive), so every request is a full handshake; wrk
                # would resume sessions (bench-peers.md).
                timeout -k 5 $((warmup + 20)) taskset -c "$load_cpu" ab -q -c64 -t"$warmup" -n 500000 "$url" >/dev/null 2>&1 || true
                before="$(cpu_ticks "${pid[$p]}")"
                start_sampler
                out="$(timeout -k 5 $((duration + 20)) taskset -c "$load_cpu" ab -q -c64 -t"$duration" -n 500000 "$url" 2>/dev/null || true)"
                after="$(cpu_ticks "${pid[$p]}")"
                rps="$(awk '/^Requests per second:/ {print $4}' <<<"$out")"
                total="$(awk '/^Complete requests:/ {print $3}' <<<"$out")"
                p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
                p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
                errors="$(awk '/^Failed requests:/ {n += $3} /^Non-2xx responses:/ {n += $3} END {print n + 0}' <<<"$out")"
            else
                timeout -k 5 $((warmup + 20)) taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${warmup}s" "$url" >/dev/null
                before="$(cpu_ticks "${pid[$p]}")"
                start_sampler
                out="$(timeout -k 5 $((duration + 20)) taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${duration}s" --latency "$url")"
                after="$(cpu_ticks "${pid[$p]}")"
                rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
                total="$(awk '/requests in/ {print $1}' <<<"$out")"
                p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
                p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
                errors="$(awk '/Non-2xx or 3xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")"
            fi
            touch "$stop"
            wait "$sampler"
            rss="$(cat "$stop.max")"
            us_req="$(python3 -c "print(f'{($after - $before) / $hz * 1e6 / max($total, 1):.1f}')")"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$p" "$rps" "$p50" "$p99" "$us_req" "$errors" "$rss" >>"$results"
            echo "round $r $s $p: $rps req/s, p50 $p50 ms, p99 $p99 ms, $us_req us/req, errors $errors, peak RSS $rss KiB" >&2
        done
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- table -------------------------------------------------------------------
mkdir -p "$root/bench/results"
report="$root/bench/results/$(date -u '+%Y-%m-%dT%H%M').md"
BBPROXY_BUILD="$bbproxy_build" python3 - "$results" "$scenarios" "$peers" "$idle_rss" >"$report" <<EOF
import os, sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
scenarios, peers = sys.argv[2].split(), sys.argv[3].split()
title = {"h1": "HTTP/1.1 keep-alive, 13-byte body, wrk",
         "h1-64k": "HTTP/1.1 keep-alive, 65536-byte body, wrk",
         "tls": "HTTPS keep-alive (TLS 1.3, RSA 2048), 13-byte body, wrk",
         "tls-new": "HTTPS, a new TLS connection per request (full handshake, RSA 2048), ab -c64",
         "h2": "HTTP/2 over TLS, 16 connections x 4 streams, h2load"}
print("Run $started on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), "
      "$rounds rounds x ${duration} s (+${warmup} s warm-up) per cell, wrk -t1 -c$connections; "
      "load average (1/5/15 min) $load_before before, $load_after after; bbproxy binary: "
      + os.environ["BBPROXY_BUILD"] + ".")
print()
print("Medians over rounds; ratios are of medians. CPU us/req is the proxy's CPU time per request "
      "(for direct: the backend's). Proxy on CPU $proxy_cpu, wrk and backend on CPU $load_cpu; "
      "unpinned: bbproxy on every CPU (a worker per CPU), x bbproxy its CPU/req over the pinned row's.")
for s in scenarios:
    print()
    print(f"**{s}** - {title[s]}" + ("" if s in ("tls-new", "h2") else f", {$connections} connections"))
    print()
    print("| row | req/s | x nginx req/s | p50 ms | p99 ms | CPU us/req | x nginx CPU/req | errors | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    shown = [p for p in peers if any(r[1] == s and r[2] == p for r in rows)]
    for p in shown:
        cell = [r for r in rows if r[1] == s and r[2] == p]
        med[p] = [statistics.median(float(r[i]) for r in cell) for i in (3, 4, 5, 6)] + [sum(int(r[7]) for r in cell)] + [max(int(r[8]) for r in cell) / 1024]
    base = med.get("nginx")
    for p in shown:
        rps, p50, p99, us, err, rss = med[p]
        xr = f"{rps / base[0]:.2f}" if base else "-"
        xc = f"{us / base[3]:.2f}" if base and p != "direct" else "-"
        if p in ("unpinned", "baseline", "policy") and "bbproxy" in med:
            xc += f" ({us / med['bbproxy'][3]:.2f} x bbproxy)"
        print(f"| {p} | {rps:.0f} | {xr} | {p50:.2f} | {p99:.2f} | {us:.1f} | {xc} | {err} | {rss:.1f} |")
    # The rounds interleave the peers, so a round's ratio compares runs
    # seconds apart: on a noisy machine their median says more about a
    # small difference than the ratio of the medians above. Oriented as
    # the table: bbproxy over nginx and haproxy, the other bbproxy rows
    # over bbproxy.
    def us_by_round(p):
        return {r[0]: float(r[6]) for r in rows if r[1] == s and r[2] == p}
    mine = us_by_round("bbproxy")
    paired = []
    for p in shown:
        if p in ("bbproxy", "direct") or not mine:
            continue
        ours = p in ("unpinned", "baseline", "policy")
        theirs = us_by_round(p)
        ratios = [(theirs[k] / mine[k]) if ours else (mine[k] / theirs[k])
                  for k in sorted(mine, key=int) if theirs.get(k, 0) > 0 and mine[k] > 0]
        if ratios:
            what = f"{p} / bbproxy" if ours else f"bbproxy / {p}"
            each = " ".join(f"{x:.2f}" for x in ratios)
            paired.append(f"{what} {statistics.median(ratios):.2f} ({each})")
    if paired:
        print()
        print("CPU/req ratios within each round, median (per round): " + "; ".join(paired))
idle = [l.split() for l in open(sys.argv[4]) if l.strip()]
if idle:
    print()
    print("**Idle RSS** (started and checked, before any load; process and children)")
    print()
    print("| peer | RSS MiB |")
    print("|---|---:|")
    for p, kib in idle:
        print(f"| {p} | {int(kib) / 1024:.1f} |")
EOF
cat "$report"
echo >&2
echo "written to ${report#"$root"/}" >&2
