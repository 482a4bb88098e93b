#!/usr/bin/env bash
# The whole test suite, as the README and CI run it. Installs the peers the tests
# talk to when they are missing, and fails loudly when one cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # need <command> <debian package>
  { command -v "$1" || [ -x "/usr/sbin/$1" ]; } >/dev/null 2>&1 && return 0
  echo "installing $2 (for $1)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; fi
  { command -v "$1" || [ -x "/usr/sbin/$1" ]; } >/dev/null 2>&1 || { echo "FAILED: $1 is required by the tests and could not be installed" >&2; exit 1; }
}

need kill procps
need mosquitto mosquitto
need mosquitto_passwd mosquitto-clients
need openssl openssl
need promtool prometheus  # promtool check metrics (tests/api.rs)
need socat socat  # pty pairs for the simulated serial meters (tests/multical.rs)
need influxd influxdb  # a real InfluxDB 1.x for the uplink's line protocol (tests/uplink_influx.rs)
need systemd-analyze systemd  # verify + security of systemd/mesura.service (tests/systemd.rs)

cargo test --locked --all-targets "$@"
