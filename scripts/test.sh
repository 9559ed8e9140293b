#!/usr/bin/env bash
# Installs mlport with its test dependencies, then runs the linters, the type checker and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

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
