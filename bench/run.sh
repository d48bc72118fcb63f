#!/usr/bin/env bash
# comfyshim benchmarks: comfyshim, Caddy and nginx in front of the same fake
# ComfyUI, and direct, measured side by side in one run on 127.0.0.1.
#
#   bash bench/run.sh            full run: 3 repetitions, writes bench/RESULTS.md
#   bash bench/run.sh --smoke    a few seconds per scenario; checks every scenario produced numbers
#
# Every peer is configured as its own experts would: nginx with upstream
# keep-alive, HTTP/1.1, "Connection" cleared for plain requests and 64k
# buffers; Caddy with its defaults. Durable tag changes are measured beside
# a raw append+fdatasync loop (the disk's floor) and SQLite in WAL mode with
# synchronous=FULL. Installs wrk, caddy, nginx and python3 from Debian when
# missing. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
RUNS=${RUNS:-3}
DUR=${DUR:-5}
ASSETS=${ASSETS:-100000}                          # the scale of the write benchmarks
SCALES=${SCALES:-"1000 10000 100000 1000000"}    # scales of memory, start time and reads
if [ "${1:-}" = "--smoke" ]; then
  MODE=smoke RUNS=1 DUR=1 ASSETS=${ASSETS_SMOKE:-2000} SCALES=${ASSETS_SMOKE:-2000}
fi

need=()
for tool in wrk caddy nginx python3; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's packages start their own services; ours use other ports.
systemctl stop caddy nginx >/dev/null 2>&1 || true

WORK=$(mktemp -d)
OUT=bench/out
mkdir -p "$OUT"
RESULTS="$OUT/results-$MODE.jsonl"
: > "$RESULTS"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=127.0.0.1:18188 SHIM=127.0.0.1:18189 CADDY=127.0.0.1:18190 NGINX=127.0.0.1:18191 API=127.0.0.1:18192

echo "building"
go build -o "$WORK/comfyshim" ./cmd/comfyshim
go build -o "$WORK/upstream" ./proxy/internal/comfytest/upstream
go build -o "$WORK/driver" ./bench/driver

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}

"$WORK/upstream" --listen "$UP" & UP_PID=$!; PIDS+=($UP_PID)
"$WORK/comfyshim" --listen "$SHIM" --upstream "http://$UP" --tags-file "$WORK/empty/tags.json" --log-level error & SHIM_PID=$!; PIDS+=($SHIM_PID)

cat > "$WORK/Caddyfile" <<EOF
{
	admin off
	auto_https off
}
http://$CADDY {
	reverse_proxy $UP
}
EOF
caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 & CADDY_PID=$!; PIDS+=($CADDY_PID)

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<EOF
worker_processes auto;
daemon off;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream comfyui { server $UP; keepalive 256; keepalive_requests 100000; }
  # Plain requests clear Connection so the upstream connection is kept;
  # websocket upgrades pass it on.
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen $NGINX;
    keepalive_requests 100000;
    location / {
      proxy_pass http://comfyui;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
      client_max_body_size 0;
    }
  }
}
EOF
nginx -c "$WORK/nginx.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)

for p in $UP $SHIM $CADDY $NGINX; do wait_port "$p"; done

declare -A ADDR=([direct]=$UP [comfyshim]=$SHIM [caddy]=$CADDY [nginx]=$NGINX)
TARGETS=(direct comfyshim caddy nginx)
declare -A PIDOF=([direct]=$UP_PID [comfyshim]=$SHIM_PID [caddy]=$CADDY_PID [nginx]=$NGINX_PID)

# pids_of TARGET: the process and its children (nginx's workers).
pids_of() { echo "${PIDOF[$1]}" $(pgrep -P "${PIDOF[$1]}" 2>/dev/null); }
# cpu_ticks PIDS...: user+system clock ticks used so far.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done; echo $t; }
# syscalls PIDS...: read and write system calls made so far.
syscalls() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '/^sysc[rw]:/ {s+=$2} END {print s+0}' "/proc/$p/io" 2>/dev/null || echo 0) )); done; echo $t; }

run_wrk() { # scenario target conns url [pid-target]
  local pt=${5:-$2} c0 s0 out
  local pids; pids=$(pids_of "$pt")
  c0=$(cpu_ticks $pids); s0=$(syscalls $pids)
  out=$(timeout $((DUR + 30)) wrk -t"$(( $3 < 2 ? 1 : 2 ))" -c"$3" -d"${DUR}s" --latency "$4")
  echo "$out" | "$WORK/driver" wrk2json -scenario "$1" -target "$2" \
    -cpu-ticks $(( $(cpu_ticks $pids) - c0 )) -syscalls $(( $(syscalls $pids) - s0 )) >> "$RESULTS"
}

for run in $(seq 1 "$RUNS"); do
  echo "run $run/$RUNS: forwarding"
  for t in "${TARGETS[@]}"; do
    a=${ADDR[$t]}
    for c in 1 16 64; do
      run_wrk "system_stats_c$c" "$t" "$c" "http://$a/api/system_stats"
    done
    timeout $((DUR + 30)) "$WORK/driver" download -url "http://$a/api/view?filename=big-1048576.bin&type=output" -target "$t" -conns 4 -dur "${DUR}s" >> "$RESULTS"
    timeout $((DUR + 30)) "$WORK/driver" ws -url "ws://$a/ws?clientId=bench" -target "$t" -dur "${DUR}s" >> "$RESULTS"
    timeout $((DUR + 30)) "$WORK/driver" ws -url "ws://$a/ws?clientId=bench" -target "$t" -binary -size 65536 -dur "${DUR}s" >> "$RESULTS"
  done
  # Peak RSS of each proxy while a 256 MiB download streams through it.
  for t in comfyshim caddy nginx; do
    case $t in comfyshim) pid=$SHIM_PID ;; caddy) pid=$CADDY_PID ;; nginx) pid=$(pgrep -P "$NGINX_PID" | head -1) ;; esac
    timeout 120 "$WORK/driver" rss -scenario stream_256MiB -url "http://${ADDR[$t]}/api/view?filename=big-268435456.bin" -pid "$pid" -target "$t" >> "$RESULTS"
  done
done

# What comfyshim's websocket relay adds per ComfyUI message: one message
# written to a client socket directly ("direct") and through the relay, which
# follows frame boundaries (to slip in pings and job events), plain and with
# its owner's events shared (each message also kept and read for a prompt_id).
echo "websocket relay cost per message"
go test -run '^$' -bench BenchmarkRelayMessage -benchtime "${DUR}s" -count "$RUNS" ./proxy/wsrelay/ |
  awk '/^BenchmarkRelayMessage\// { split($1, p, "/"); sub(/-[0-9]+$/, "", p[3]); print p[2], p[3], $3 }' |
  while read -r msg mode ns; do
    case $mode in
      raw) for suffix in "" _shared; do "$WORK/driver" emit -scenario "ws_relay_$msg$suffix" -target direct -metric per_message -unit ns -value "$ns" >> "$RESULTS"; done ;;
      relay) "$WORK/driver" emit -scenario "ws_relay_$msg" -target comfyshim -metric per_message -unit ns -value "$ns" >> "$RESULTS" ;;
      relay_shared) "$WORK/driver" emit -scenario "ws_relay_${msg}_shared" -target comfyshim -metric per_message -unit ns -value "$ns" >> "$RESULTS" ;;
    esac
  done

# Comfy API v2: upload throughput beside the Cloud asset API's upload path
# (the same comfyshim and disk; content unique per upload, so nothing
# deduplicates), and what open event streams cost: resident memory per
# stream, and events delivered per second once the job they watch runs.
V2=127.0.0.1:18193
UPLOAD_MIB=256 STREAMS=2000
if [ "$MODE" = smoke ]; then UPLOAD_MIB=16 STREAMS=100; fi
mkdir -p "$WORK/v2/input" "$WORK/v2/output" "$WORK/v2/user"
for run in $(seq 1 "$RUNS"); do
  echo "run $run/$RUNS: Comfy API v2"
  # A fresh process each run: memory a process once used is not returned,
  # so a second run would measure less than a stream costs.
  "$WORK/comfyshim" --listen "$V2" --upstream "http://$UP" --comfyui-dir "$WORK/v2" --log-level error & V2_PID=$!; PIDS+=($V2_PID)
  wait_port "$V2"
  "$WORK/driver" streams -url "http://$V2" -pid "$V2_PID" -n "$STREAMS" -target comfyshim >> "$RESULTS"
  "$WORK/driver" upload -url "http://$V2" -api v1 -size "$UPLOAD_MIB" -target comfyshim_v1 -scenario "upload_${UPLOAD_MIB}MiB" >> "$RESULTS"
  "$WORK/driver" upload -url "http://$V2" -api v2 -size "$UPLOAD_MIB" -target comfyshim -scenario "upload_${UPLOAD_MIB}MiB" >> "$RESULTS"
  kill "$V2_PID"; wait "$V2_PID" 2>/dev/null || true
done
rm -rf "$WORK/v2"

# The local asset API at each scale: time until ready, read latency, memory
# after a mixed load; durable tag changes at $ASSETS assets, beside the
# disk's floor and SQLite. Every asset has an entry in the tags file (the
# largest sidecar those assets can have).
for n in $SCALES; do
  echo "local asset API: making $n assets"
  rm -rf "$WORK/comfy"
  mkdir -p "$WORK/comfy/output" "$WORK/comfy/user"
  "$WORK/driver" mkassets -dir "$WORK/comfy" -n "$n"
  sync
  t0=$(date +%s%N)
  "$WORK/comfyshim" --listen "$API" --upstream "http://$UP" --comfyui-dir "$WORK/comfy" --log-level error & API_PID=$!; PIDS+=($API_PID)
  PIDOF[api]=$API_PID
  until curl -fsS "http://$API/api/tags?limit=1" >/dev/null 2>&1; do
    kill -0 "$API_PID" 2>/dev/null || { echo "comfyshim exited at $n assets" >&2; exit 1; }
    sleep 0.01
  done
  "$WORK/driver" emit -scenario "start_n$n" -target comfyshim -metric ready_after -unit s -value "$(( ($(date +%s%N) - t0) / 1000000 ))e-3" >> "$RESULTS"
  for run in $(seq 1 "$RUNS"); do
    echo "run $run/$RUNS: local asset API at $n assets"
    run_wrk "tags_list_c1_n$n" comfyshim 1 "http://$API/api/tags" api
    run_wrk "assets_filter_c16_n$n" comfyshim 16 "http://$API/api/assets?include_tags=favorite,output&exclude_tags=style:3&limit=50" api
    if [ "$n" = "$ASSETS" ]; then
      run_wrk "tags_list_c16_n$n" comfyshim 16 "http://$API/api/tags" api
      run_wrk "assets_filter_c1_n$n" comfyshim 1 "http://$API/api/assets?include_tags=favorite,output&exclude_tags=style:3&limit=50" api
      for c in 1 8 64; do
        timeout $((DUR + 60)) "$WORK/driver" mutate -url "http://$API" -target comfyshim -conns "$c" -n "$n" -dur "${DUR}s" >> "$RESULTS"
      done
      timeout $((DUR + 30)) "$WORK/driver" fsync -dir "$WORK/comfy/user" -target fdatasync -scenario tag_mutations_1clients -dur "${DUR}s" >> "$RESULTS"
      timeout $((DUR + 30)) python3 bench/sqlite_anchor.py "$WORK/comfy/user" "$DUR" tag_mutations_1clients >> "$RESULTS"
    else
      timeout $((DUR + 60)) "$WORK/driver" mutate -url "http://$API" -target comfyshim -scenario "tag_mutations_8clients_n$n" -conns 8 -n "$n" -dur "${DUR}s" >> "$RESULTS"
    fi
  done
  # Resident memory after that mixed read and write load.
  "$WORK/driver" rss -scenario "rss_after_load_n$n" -pid "$API_PID" -target comfyshim >> "$RESULTS"
  kill "$API_PID"; wait "$API_PID" 2>/dev/null || true
done
rm -rf "$WORK/comfy"

# Every scenario must have produced numbers.
expected=(system_stats_c1 system_stats_c64 view_1MiB ws_text_small ws_binary_64KiB stream_256MiB tag_mutations_1clients tag_mutations_64clients
  ws_relay_progress_text ws_relay_progress_text_shared ws_relay_preview_64KiB "upload_${UPLOAD_MIB}MiB" "v2_event_streams_$STREAMS")
for n in $SCALES; do expected+=("start_n$n" "tags_list_c1_n$n" "assets_filter_c16_n$n" "rss_after_load_n$n"); done
for s in "${expected[@]}"; do
  grep -q "\"scenario\":\"$s\"" "$RESULTS" || { echo "scenario $s produced no result" >&2; exit 1; }
done
for t in "${TARGETS[@]}" fdatasync sqlite_wal_full comfyshim_v1; do
  grep -q "\"target\":\"$t\"" "$RESULTS" || { echo "target $t produced no result" >&2; exit 1; }
done

if [ "$MODE" = full ]; then
  {
    echo "# Benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%d)"
    echo "- $(go version)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
    echo "- command: \`bash bench/run.sh\` (RUNS=$RUNS, DUR=${DUR}s each, $ASSETS assets); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), caddy $(caddy version | awk '{print $1}'), nginx $(nginx -v 2>&1 | cut -d/ -f2)"
    echo "- every process on 127.0.0.1 on the same machine, load generator included; the fake ComfyUI is Go (proxy/internal/comfytest/upstream)"
    echo "- nginx: upstream keepalive 256, HTTP/1.1, Connection cleared for plain requests, 64k buffers; Caddy: reverse_proxy with its defaults"
    echo "- cpu_per_request and syscalls_per_request: the target's processes' user+system time and read/write system calls during the wrk run, divided by its requests"
    echo "- local asset API at $SCALES assets in output/, every one with an entry in the tags file (the largest sidecar they can have); durable tag changes at $ASSETS, beside an append+fdatasync loop and SQLite (WAL, synchronous=FULL, one row per transaction, python3 $(python3 -c 'import sqlite3;print(sqlite3.sqlite_version)'))"
    echo
    echo "Medians of $RUNS runs with min – max. Ratios divide comfyshim's median by the other target's:"
    echo "for latency and memory lower is better, for throughput higher is better."
    echo
    "$WORK/driver" report "$RESULTS"
  } > bench/RESULTS.md
  echo "wrote bench/RESULTS.md"
else
  "$WORK/driver" report "$RESULTS"
  echo "smoke: every scenario produced numbers"
fi
