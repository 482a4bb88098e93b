#!/usr/bin/env bash
# Regenerates scripts/symbol-order.txt: the functions of mesura's binary that a
# running daemon executes after start-up, hottest first (build.rs hands the file
# to the linker, which lays them out together; docs/benchmarks.md, memory).
# The daemon runs the bench-rss.sh set-up (N simulated devices at 1 s, SQLite,
# CSV, the status API with a dashboard's requests) under callgrind, which counts
# only from SETTLE seconds after start to the end of the run: every function run
# in that window is listed, however rarely, not only the ones a sampler catches.
# Run it after a toolchain update or a change to the steady-state path (the
# symbols carry the crate hashes); a stale file only costs memory, never the build.
# Usage: scripts/gen-symbol-order.sh [devices=50] [seconds=60]   (needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}; secs=${2:-60}; settle=${SETTLE:-20}
# The release build with its symbols kept: the same profile as the shipped,
# stripped binary (build.rs strips at link time), so the same symbol names.
# GEN_BIN=path profiles that (unstripped) release binary instead of building one.
bin=${GEN_BIN:-}
if [ -z "$bin" ]; then
  BUILD_KEEP_SYMBOLS=1 cargo build --release --quiet
  bin=target/release/mesura
fi
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/config.d"
printf 'backends:\n  sqlite: {}\n  csv: {}\napi:\n  listen: "127.0.0.1:0"\n' > "$dir/config.yaml"
profiles=(electricity gas climate)
for i in $(seq 1 "$n"); do
  printf 'type: simulated\nprofile: %s\npoll_interval: 1s\n' "${profiles[$((i % 3))]}" > "$dir/config.d/dev$i.yaml"
done
valgrind --tool=callgrind --instr-atstart=no --demangle=no \
  --callgrind-out-file="$dir/callgrind.out" \
  "$bin" --config "$dir/config.yaml" --log-format text 2>"$dir/log" &
pid=$!
# Start-up under valgrind is slow: count from SETTLE seconds after the first
# stored readings (the start-up code's memory is handed back 10 s after start).
sleep "$settle"
callgrind_control -i on "$pid" >/dev/null
sleep $((secs / 2))
addr=$(sed -n 's/.*status API listening.*addr=\([0-9.:]*\).*/\1/p' "$dir/log" | head -1)
for path in /health /metrics /api/devices /api/readings/latest "/api/readings?device=dev1"; do
  curl -fsS -o /dev/null "http://$addr$path" || echo "API request $path failed" >&2
done
sleep $((secs - secs / 2))
callgrind_control -i off "$pid" >/dev/null
kill -TERM "$pid"; wait "$pid" || true
[ -n "${KEEP_PROFILE:-}" ] && cp "$dir"/callgrind.out* "$KEEP_PROFILE"
# Self cost (instructions) per function of mesura's own object, hottest first.
python3 - "$(realpath "$bin")" "$dir"/callgrind.out* > scripts/symbol-order.txt <<'EOF'
import os, re, sys
binary = sys.argv[1]
cost, names = {}, {}
def name(kind, value):
    # Compressed names: "(12) full_name" the first time, "(12)" after.
    m = re.match(r'\((\d+)\)(?: (.*))?', value)
    if not m:
        return value
    table = names.setdefault(kind, {})
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), '')
for path in sys.argv[2:]:
    ob = fn = None
    skip = False
    for line in open(path, errors='replace'):
        line = line.rstrip('\n')
        key, eq, value = line.partition('=')
        if eq and key in ('ob', 'cob', 'fn', 'cfn', 'fl', 'fi', 'fe', 'cfi', 'cfl'):
            # cob/cfn share ob's/fn's name table; the file names share one.
            kind = {'cob': 'ob', 'cfn': 'fn'}.get(key, key if key in ('ob', 'fn') else 'fl')
            value = name(kind, value)
            if key == 'ob':
                ob = value
            elif key == 'fn':
                # "name'2": callgrind's mark for a recursion depth, not the symbol.
                fn = re.sub(r"'\d+$", '', value)
        elif line.startswith('calls='):
            skip = True  # the next line is the call's inclusive cost
        elif line[:1].isdigit() or line[:1] in '+-*':
            if skip:
                skip = False
                continue
            parts = line.split()
            if fn and ob and os.path.realpath(ob) == binary and len(parts) > 1 and parts[1].isdigit():
                cost[fn] = cost.get(fn, 0) + int(parts[1])
for fn, _ in sorted(cost.items(), key=lambda kv: -kv[1]):
    print(fn)
EOF
echo "scripts/symbol-order.txt: $(wc -l < scripts/symbol-order.txt) functions"
