#!/usr/bin/env bash
# Home Assistant core in a venv under target/ha-venv, the real peer of
# tests/it/backends/home_assistant.rs. Idempotent: quick when the same pins are there
# already. Prints the venv's python.
# 2024.3.3 is the last Home Assistant that runs on Python 3.11. What its requirements
# leave loose is pinned so it imports, and what the integrations it loads at start
# (mqtt, recorder, frontend, onboarding, person, backup, camera) would pip-install is
# installed here: the tests run hass with --skip-pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/target/ha-venv"
PY="$VENV/bin/python"
PINS=(
  "homeassistant==2024.3.3"
  "paho-mqtt==1.6.1"
  "SQLAlchemy==2.0.27"
  "fnv-hash-fast==0.5.0"
  "psutil-home-assistant==0.0.1"
  "josepy<2"
  "Pillow==10.2.0"
  "numpy==1.26.0"
  "janus==1.0.0"
  "securetar==2024.2.1"
  "home-assistant-frontend==20240307.0"
)
MODULES="homeassistant, paho.mqtt, sqlalchemy, fnv_hash_fast, psutil_home_assistant, PIL, numpy, janus, securetar, hass_frontend"
MARKER="$VENV/.mesura-pins"
if [ "$(cat "$MARKER" 2>/dev/null)" = "${PINS[*]}" ] && "$PY" -c "import $MODULES" 2>/dev/null; then
  echo "$PY"; exit 0
fi
echo "installing Home Assistant into $VENV (a few minutes the first time)" >&2
if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv --clear "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >&2
"$VENV/bin/pip" install -q "${PINS[@]}" >&2
"$PY" -c "import $MODULES" >&2
echo "${PINS[*]}" > "$MARKER"
echo "$PY"
