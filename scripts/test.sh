#!/usr/bin/env bash
# Installs mlport with its test dependencies, then runs the linters, the type checker and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# PyTorch's CPU build first: a plain torch requirement would pull the CUDA build.
python3 -m pip install --quiet --disable-pip-version-check "torch==${MLPORT_TORCH_VERSION:-2.13.0}"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test,torch]'
# TF Serving's official client stubs, without their dependencies: they ask for the `tensorflow` distribution,
# which pip would install beside (and over) tensorflow-cpu of the same version. What they use (grpcio,
# protobuf, TensorFlow's own messages) comes with the test extra.
python3 -m pip install --quiet --disable-pip-version-check --no-deps 'tensorflow-serving-api>=2.16,<3'

# Debian packages the tests use: a real browser (chromium) for the web pages, a Java runtime for PMML, and for
# images: buildah (builds and runs them), podman (builds them too), mmdebstrap (a base from Debian packages),
# skopeo and docker-registry.
apt_missing=()
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v java >/dev/null 2>&1 || apt_missing+=(default-jre-headless)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)  # the Gateway API models that check the HTTPRoutes
for tool in buildah podman mmdebstrap skopeo docker-registry; do
    command -v "$tool" >/dev/null 2>&1 || apt_missing+=("$tool")
done
if [ "${#apt_missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing ${apt_missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

echo "== ruff"
python3 -m ruff check src tests bench
echo "== mypy"
python3 -m mypy
echo "== import layers"
lint-imports

echo "== pytest"
set +e
python3 -m pytest --durations=25 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
