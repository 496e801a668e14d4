#!/usr/bin/env bash
# Run the Python client's tests: codec unit tests (no server) and integration
# tests against a real tallyd ($TALLYD, default <repo>/target/debug/tallyd).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$here"

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

export TALLYD="${TALLYD:-$repo/target/debug/tallyd}"
if [ ! -x "$TALLYD" ]; then
    echo "run-tests.sh: no tallyd at $TALLYD: the integration tests will be skipped (build it, or set TALLYD)" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
