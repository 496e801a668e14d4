#!/usr/bin/env bash
# The status page in a real headless browser: starts tallyd ($TALLYD) with its
# metrics on a free port, loads it with tally-bench ($TALLY_BENCH), opens
# http://METRICS/ in Chromium ($CHROMIUM, default /usr/bin/chromium, Debian's
# package) through Playwright, and checks that every panel fills in live.
# SCREENSHOT=path.png also saves what the browser showed.
# Without a browser the test is skipped, unless REQUIRE_BROWSER=1 (CI).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check 'playwright>=1.40,<2' 'pytest>=7'
export TALLYD="${TALLYD:-$repo/target/debug/tallyd}"
export TALLY_BENCH="${TALLY_BENCH:-$repo/target/debug/tally-bench}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
exec .venv/bin/python -m pytest -q "$@"
