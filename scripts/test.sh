#!/usr/bin/env bash
# The whole test suite, as the README and CI run it. Installs the peers the tests
# talk to when they are missing, and fails loudly when one cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
APT_UPDATED=""
need() { # need <command> <debian package>
  { command -v "$1" || [ -x "/usr/sbin/$1" ]; } >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)" >&2
  # One package-list update per run, on the first install only.
  [ -n "$APT_UPDATED" ] || { $SUDO apt-get update -qq && APT_UPDATED=1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  { command -v "$1" || [ -x "/usr/sbin/$1" ]; } >/dev/null 2>&1 || { echo "FAILED: $1 is required by the tests and could not be installed" >&2; exit 1; }
}

need kill procps
need ionice util-linux  # the release build for the .deb runs at idle I/O priority beside the tests
need mosquitto mosquitto
need mosquitto_passwd mosquitto-clients
need openssl openssl
need promtool prometheus  # promtool check metrics (tests/it/api/endpoints.rs)
need chromium chromium  # the web page in a real browser, driven over the DevTools protocol (tests/it/api/page.rs, tests/it/support/cdp.rs)
need socat socat  # pty pairs for the simulated serial meters (tests/it/devices/multical.rs)
need influxd influxdb  # a real InfluxDB 1.x for the uplink's line protocol (tests/it/backends/uplink_influx.rs)
need victoria-metrics victoria-metrics  # a fleet into a real VictoriaMetrics (tests/it/backends/victoriametrics.rs)
need systemd-analyze systemd  # verify + security of systemd/mesura.service (tests/it/daemon/systemd.rs)
need strace strace  # fsyncs of the daemon, per file (tests/reliability/soak.rs)
need faketime faketime  # the clock-sensitive tests again, ten years ahead (below)
need adduser adduser  # the .deb's postinst, and a dependency of the package (scripts/test-deb.sh)
need dash dash  # Debian's /bin/sh parses the .deb's maintainer scripts (scripts/test-deb.sh)

# The Python peers, in venvs under target/ so nothing system-wide changes, pinned for
# repeatable runs:
# - pymodbus, the independent Modbus peer of tests/it/devices/modbus.rs (server, base
#   station), and pyarrow, the independent Parquet reader of tests/it/api/export_parquet.rs
#   (tests/peers/parquet_compare.py), in target/pyvenv;
# - Home Assistant core 2024.3.3 in target/ha-venv, the real peer of
#   tests/it/backends/home_assistant.rs (scripts/ha-venv.sh; about 5 minutes the first
#   time, quick once there).
# On a fresh machine installing them is mostly downloading: it runs in the background
# while cargo builds, and the tests wait for it.
# (Not MESURA_*: the config loader reads those as overrides.)
need python3 python3
PYVENV="$PWD/target/pyvenv"
python_peers() {
  if ! "$PYVENV/bin/python" -c 'import pymodbus, serial, pyarrow, sys; sys.exit(pymodbus.__version__ != "3.16.1" or pyarrow.__version__ != "21.0.0")' 2>/dev/null; then
    echo "installing pymodbus 3.16.1 and pyarrow 21.0.0 into $PYVENV"
    # Debian's python3 lacks venv until python3-venv is installed (nothing else runs
    # apt-get while this runs: cargo has the foreground).
    if ! python3 -m venv --clear "$PYVENV" >/dev/null 2>&1; then
      $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv --clear "$PYVENV" || { echo "FAILED: cannot create a Python venv for pymodbus and pyarrow"; return 1; }
    fi
    "$PYVENV/bin/pip" install -q "pymodbus[serial]==3.16.1" "pyarrow==21.0.0" \
      || { echo "FAILED: pymodbus (the Modbus tests) and pyarrow (the Parquet export tests) are required and could not be installed"; return 1; }
  fi
  scripts/ha-venv.sh >/dev/null || { echo "FAILED: Home Assistant could not be installed (scripts/ha-venv.sh)"; return 1; }
}
peers_log=$(mktemp)
python_peers >"$peers_log" 2>&1 &
peers_pid=$!
trap 'kill "$peers_pid" 2>/dev/null || true; rm -f "$peers_log"' EXIT
export PYMODBUS_PYTHON="$PYVENV/bin/python"
export HA_VENV_PYTHON="$PWD/target/ha-venv/bin/python"

# Where the time goes, for CI logs.
phase() { echo "== [${SECONDS}s] $*"; }

# The lint wall first: a warning anywhere (tests and benches included) fails the run
# before any test starts.
phase "clippy"
cargo clippy --locked --all-targets -- -D warnings

phase "build the tests"
cargo test --locked --all-targets --no-run

phase "wait for the Python peers"
if ! wait "$peers_pid"; then
  cat "$peers_log" >&2
  echo "FAILED: the Python test peers could not be installed (above)" >&2
  exit 1
fi
cat "$peers_log" >&2

log=$(mktemp)
status=0
if [ "$#" -ne 0 ]; then
  # A filtered run, someone's quick check: those tests, nothing else.
  phase "the tests ($*)"
  trap 'rm -f "$log" "$peers_log"' EXIT
  cargo test --locked --no-fail-fast --all-targets "$@" 2>&1 | tee "$log" || status=$?
  phase "done"
  awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
  exit "$status"
fi

# The release build for the .deb (and cargo-deb) starts now, in the background at the
# lowest CPU and I/O priority: the tests below mostly wait on timers and peers, and it
# takes what they leave. The reliability suites, which measure the daemon as a
# process, wait for it to end and run on a quiet machine.
deb_log=$(mktemp)
nice -n 19 ionice -c 3 scripts/test-deb.sh --build-only >"$deb_log" 2>&1 &
deb_pid=$!
trap 'kill "$deb_pid" 2>/dev/null || true; rm -f "$log" "$peers_log" "$deb_log"' EXIT

# The benches run too (as smoke tests, in debug): their figures are printed, not judged.
phase "the tests: the lib, tests/it, the benches"
cargo test --locked --no-fail-fast --lib --bins --test it --benches 2>&1 | tee "$log" || status=$?

# The tests that meet the wall clock (outbox ages, retention, token expiry, "last
# seen", certificates, device clocks) once more with the clock ten years ahead, so a
# test bound to today's calendar fails today rather than on some future morning.
# libfaketime moves CLOCK_REALTIME only; tokio's timers keep the real monotonic clock.
phase "the clock-sensitive tests with the clock ten years ahead (faketime +10y)"
# The same suites in the test binaries (module paths; the lib's unit tests all).
faketime_test() {
  FAKETIME_DONT_FAKE_MONOTONIC=1 cargo test --locked --no-fail-fast \
    --config "target.'cfg(all())'.runner=['faketime','-f','+10y']" "$@" 2>&1 | tee -a "$log" || status=$?
}
faketime_test --lib
faketime_test --test it -- api::endpoints:: cli::commands:: cli::decode:: devices::dsmr_serial:: \
  devices::dsmr_tcp:: daemon::e2e:: devices::evohome:: backends::grafana:: devices::homewizard:: \
  devices::homewizard_v2:: backends::mqtt:: devices::openweathermap:: devices::polling:: \
  daemon::reload:: daemon::router:: backends::uplink_influx:: backends::uplink_json:: api::events::
faketime_test --test reliability -- clock::

phase "wait for the release build"
# A failure here is reported by scripts/test-deb.sh below, which builds again.
wait "$deb_pid" || true
indent_log() { sed 's/^/   | /' "$1"; }
indent_log "$deb_log"

phase "the reliability suites (docs/reliability.md)"
cargo test --locked --no-fail-fast --test reliability 2>&1 | tee -a "$log" || status=$?

# The .deb built, installed on this machine, upgraded and purged (needs root or sudo).
phase "the .deb: build, dpkg -i, upgrade, purge (scripts/test-deb.sh)"
scripts/test-deb.sh || { status=$?; echo "FAILED: scripts/test-deb.sh" | tee -a "$log"; }

# One closing line for the whole suite.
phase "done"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
