#!/usr/bin/env bash
# Run the whole test suite (sets up .venv and Debian's chromium for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the browser tests..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# one pytest worker per core (pytest-xdist): 448 tests in 7.6 min on 2 cores, against 13.6 min in one process
# (session 12); pass -n 0 to run in one process, e.g. with -x or a debugger. The slowest tests are listed at
# the end, so a test that grows past the suite's ~10-minute budget shows up in every run's log.
exec .venv/bin/python -m pytest -n auto --durations=12 "$@"
