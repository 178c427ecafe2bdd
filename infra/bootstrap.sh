#!/usr/bin/env bash
# Everything Quire needs on a fresh Debian 12 machine (or image), idempotent and quick when
# nothing is missing: system packages with apt-get, then a virtual environment made from the
# system Python with --system-site-packages, so that Debian's python3-uno (`import uno`) works.
#
#   infra/bootstrap.sh            runtime only (what `make run` and the Docker image need)
#   infra/bootstrap.sh --dev      plus the test and lint tools (what `make test` needs)
#
# QUIRE_VENV (default .venv) says where the virtual environment goes.
set -euo pipefail

cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
venv="${QUIRE_VENV:-.venv}"

packages=(
  python3 python3-venv python3-uno
  libreoffice-writer  # not the -nogui variant: it lacks the .ui files Writer needs to lay out comments
  redis-server
  # Metric-compatible fonts, so documents keep their layout: Carlito for Calibri, Caladea for
  # Cambria, Liberation for Times/Arial/Courier, DejaVu and Noto CJK for everything else.
  fonts-crosextra-carlito fonts-crosextra-caladea fonts-liberation2 fonts-dejavu-core
  fonts-noto-cjk
)
if [[ -n "$extras" ]]; then
  # The tests start a throwaway PostgreSQL cluster, validate docker-compose.yml and drive the
  # web page in headless Chromium (Selenium talks to it through chromedriver).
  packages+=(postgresql docker-compose chromium chromium-driver)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if (( ${#missing[@]} )); then
  echo "bootstrap: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: root is needed to install system packages" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's own Python: python3-uno is built for it, not for any other Python on the PATH.
if [[ ! -x "$venv/bin/python" ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.quire-installed${extras:+-dev}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install -q --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi
"$venv/bin/python" -c "import uno" 2>/dev/null \
  || echo "bootstrap: warning: python3-uno is not importable; falling back to soffice per file" >&2
