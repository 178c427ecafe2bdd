#!/usr/bin/env bash
# Everything Quire needs on a fresh Debian 12 machine (or image), idempotent and quick when
# nothing is missing: system packages with apt-get, then a virtual environment made from Debian's
# Python that installs exactly what the lock pins (requirements/*.txt, by hash) and sees, of
# Debian's own Python packages, only python3-uno (`import uno`).
#
#   infra/bootstrap.sh            runtime only (what `make run` and the Docker image need)
#   infra/bootstrap.sh --dev      plus the test and lint tools (what `make test` needs)
#
# QUIRE_VENV (default .venv) says where the virtual environment goes.
set -euo pipefail

cd "$(dirname "$0")/.."
lock_set=runtime
[[ "${1:-}" == "--dev" ]] && lock_set=dev
lock="requirements/$lock_set.txt"
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
if [[ "$lock_set" == dev ]]; then
  # The tests start a throwaway PostgreSQL cluster, validate docker-compose.yml and drive the
  # web page in headless Chromium (Selenium talks to it through chromedriver); the cluster test
  # (tests/cluster) builds its hosts as network namespaces with `ip` (iproute2).
  packages+=(postgresql docker-compose chromium chromium-driver iproute2)
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

# Debian's own Python: python3-uno is built for it, not for any other Python on the PATH. No
# --system-site-packages: that would put every Debian Python package (pyOpenSSL, an old
# cryptography, ...) beside the locked ones, where they get imported instead of or on top of
# them. A venv made that way by an older checkout is made anew.
if [[ -f "$venv/pyvenv.cfg" ]] && grep -q "include-system-site-packages = true" "$venv/pyvenv.cfg"; then
  echo "bootstrap: remaking $venv without Debian's site-packages"
  rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  /usr/bin/python3 -m venv "$venv"
fi

# Install from the lock only: every package pinned, every download checked against its hash,
# no dependency resolved on the day (--no-deps; the lock is complete). Quire itself goes in
# editable, built by the locked setuptools without fetching a build environment.
# One stamp for both sets: it holds the digest of the lock and of the project files (the
# server's and, where it is copied, the client's) last installed.
stamp="$venv/.quire-installed"
digest_inputs=("$lock" pyproject.toml)
[[ -f client/pyproject.toml ]] && digest_inputs+=(client/pyproject.toml)
lock_digest=$(sha256sum "${digest_inputs[@]}" | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_digest" ]]; then
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --no-index -e .
  # The client (SDK and the quire command), its dependencies in the same lock. The image copies
  # no client/: a server needs no quire command.
  if [[ -f client/pyproject.toml ]]; then
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
      --no-index -e client
  fi
  "$venv/bin/pip" check >/dev/null || { "$venv/bin/pip" check >&2; exit 1; }
  echo "$lock_digest" > "$stamp"
fi

# Of Debian's Python packages the venv sees only python3-uno's two modules (uno.py loads
# pyuno.so from LibreOffice's own program folder by itself).
site_packages=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for module in uno.py unohelper.py; do
  if [[ -f "/usr/lib/python3/dist-packages/$module" ]]; then
    ln -sfn "/usr/lib/python3/dist-packages/$module" "$site_packages/$module"
  fi
done
"$venv/bin/python" -c "import uno" 2>/dev/null \
  || echo "bootstrap: warning: python3-uno is not importable; falling back to soffice per file" >&2
