#!/usr/bin/env bash
# The daemon's memory with N simulated devices polled every second (SQLite, CSV,
# status API on), and where it goes: anonymous memory (heap, thread stacks) against
# file-backed pages (the binary's code, libc), the largest mappings, the threads.
# Usage: scripts/bench-rss.sh [devices=50] [seconds=60]
# BENCH_BIN=path measures that binary instead of building target/release/mesura.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}; secs=${2:-60}
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/mesura
fi
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/config.d"
# Port 0: the API listens, as it does by default, without clashing with another daemon.
printf 'backends:\n  sqlite: {}\n  csv: {}\napi:\n  listen: "127.0.0.1:0"\n' > "$dir/config.yaml"
profiles=(electricity gas climate)
for i in $(seq 1 "$n"); do
  printf 'type: simulated\nprofile: %s\npoll_interval: 1s\n' "${profiles[$((i % 3))]}" > "$dir/config.d/dev$i.yaml"
done
"$bin" --config "$dir/config.yaml" --log-format text 2>"$dir/log" &
pid=$!
# Half-way, the requests a dashboard makes (the readings ones open a reader).
sleep $((secs / 2))
addr=$(sed -n 's/.*status API listening.*addr=\([0-9.:]*\).*/\1/p' "$dir/log" | head -1)
if [ -z "$addr" ]; then
  echo "the status API did not start; log: $(cat "$dir/log")" >&2
else
  for path in /health /metrics /api/devices /api/readings/latest "/api/readings?device=dev1"; do
    curl -fsS -o /dev/null "http://$addr$path" || echo "API request $path failed" >&2
  done
fi
sleep $((secs - secs / 2))
status=/proc/$pid/status
rss=$(awk '/^VmRSS/ {print $2}' $status); hwm=$(awk '/^VmHWM/ {print $2}' $status)
threads=$(awk '/^Threads/ {print $2}' $status)
cpu=$(awk '{print $14 + $15}' /proc/$pid/stat); tck=$(getconf CLK_TCK)
rollup() { awk -v key="$1:" '$1 == key {print $2}' /proc/$pid/smaps_rollup; }
anon=$(rollup Anonymous); file=$(rollup Pss_File)
# Resident KiB per mapping, summed by what it maps: the binary, each library,
# [heap], [stack]; anonymous mappings (malloc arenas, thread stacks, large
# allocations) are named by their size.
mappings=$(awk '
  /^[0-9a-f]+-[0-9a-f]+ / { name = $6; if (name ~ /^\//) { k = split(name, part, "/"); name = part[k] }; next }
  /^Size:/ { if (name == "") name = "anon " $2 " KiB mapping" }
  /^Rss:/ { rss[name] += $2 }
  END { for (m in rss) if (rss[m] > 0) printf "%8d KiB  %s\n", rss[m], m }
' /proc/$pid/smaps | sort -rn | head -12)
kill -TERM $pid; wait $pid
rows=$(sqlite3 "$dir/data/mesura.db" "SELECT sum(n) FROM (SELECT count(*) AS n FROM dev1 UNION ALL SELECT count(*) FROM dev2)")
echo "devices=$n seconds=$secs rss_kib=$rss peak_rss_kib=$hwm cpu_seconds=$(echo "scale=2; $cpu / $tck" | bc) rows_dev1_dev2=$rows"
echo "threads=$threads anonymous_kib=$anon file_backed_pss_kib=$file"
echo "resident by mapping (top 12):"
echo "$mappings"
