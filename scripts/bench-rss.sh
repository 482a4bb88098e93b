#!/usr/bin/env bash
# The daemon's memory with N simulated devices polled every second.
# Usage: scripts/bench-rss.sh [devices=50] [seconds=60]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}; secs=${2:-60}
cargo build --release --quiet
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/config.d"
printf 'backends:\n  sqlite: {}\n  csv: {}\n' > "$dir/config.yaml"
profiles=(electricity gas climate)
for i in $(seq 1 "$n"); do
  printf 'type: simulated\nprofile: %s\npoll_interval: 1s\n' "${profiles[$((i % 3))]}" > "$dir/config.d/dev$i.yaml"
done
target/release/mesura --config "$dir/config.yaml" 2>"$dir/log" &
pid=$!
sleep "$secs"
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
cpu=$(awk '{print $14 + $15}' /proc/$pid/stat); tck=$(getconf CLK_TCK)
kill -TERM $pid; wait $pid
rows=$(sqlite3 "$dir/data/mesura.db" "SELECT sum(n) FROM (SELECT count(*) AS n FROM dev1 UNION ALL SELECT count(*) FROM dev2)")
echo "devices=$n seconds=$secs rss_kib=$rss peak_rss_kib=$hwm cpu_seconds=$(echo "scale=2; $cpu / $tck" | bc) rows_dev1_dev2=$rows"
