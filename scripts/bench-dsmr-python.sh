#!/usr/bin/env bash
# DSMR decoding, telegrams per second, mesura against Python's dsmr-parser 1.11.2
# (`TelegramParser(telegram_specifications.V5).parse`: CRC check + decode) on the same
# DSMR 5 telegram, in the same run, so both see the same machine and the same load.
# Writes nothing; prints both figures and the ratio (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

TELEGRAM=tests/fixtures/dsmr/dsmr50_iskra_am550_real.txt
VENV=${DSMR_BENCH_VENV:-/tmp/mesura-bench-dsmr-venv}

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check dsmr-parser==1.11.2

# Python: best of 5 rounds of 2000 parses; the decoded value is checked so a parse
# that silently failed cannot look fast.
python_rate=$("$VENV/bin/python" - "$TELEGRAM" <<'PY'
import sys, timeit
from dsmr_parser.parsers import TelegramParser
from dsmr_parser import telegram_specifications
data = open(sys.argv[1], "rb").read().decode("ascii")
parser = TelegramParser(telegram_specifications.V5)
t = parser.parse(data)
assert float(t.ELECTRICITY_USED_TARIFF_1.value) == 3808.351, t.ELECTRICITY_USED_TARIFF_1.value
n = 2000
best = min(timeit.repeat(lambda: parser.parse(data), number=n, repeat=5))
print(f"{n / best:.0f}")
PY
)

rust_out=$(cargo bench --quiet --bench dsmr_decode 2>/dev/null)
echo "$rust_out"
rust_decode=$(echo "$rust_out" | awk '/decode only/ {print $(NF-1)}')
rust_full=$(echo "$rust_out" | awk '/frame \+ CRC \+ decode/ {print $(NF-1)}')

echo "python dsmr-parser 1.11.2 ($("$VENV/bin/python" --version 2>&1)): $python_rate telegrams/s"
awk -v r="$rust_decode" -v f="$rust_full" -v p="$python_rate" 'BEGIN {
  printf "mesura decode (CRC + decode, like parse): %d telegrams/s = %.0fx dsmr-parser\n", r, r / p
  printf "mesura framer + CRC + decode (stream):    %d telegrams/s = %.0fx dsmr-parser\n", f, f / p
}'
