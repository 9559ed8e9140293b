#!/usr/bin/env bash
# Installs mlport with its test dependencies, then runs the linters, the type checker and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# A real browser for the web page tests (Debian's chromium), installed when missing and we may.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== ruff"
python3 -m ruff check src tests
echo "== mypy"
python3 -m mypy
echo "== import layers"
lint-imports

echo "== pytest"
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
