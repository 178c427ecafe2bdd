# One image for the API, the Celery workers and beat; docker-compose.yml picks the command.
#
# It is set up by the same infra/bootstrap.sh as a plain Debian 12 machine (`make run`), so the
# image and a bare machine get the same system packages (LibreOffice, python3-uno, fonts) and the
# same virtual environment: made from Debian's /usr/bin/python3, filled from the runtime lock
# (requirements/runtime.txt, every package pinned by hash; no test or lint tool), and seeing of
# Debian's Python packages only python3-uno's `uno` and `unohelper`.
#
#   docker build -t quire .
#   docker run --init -p 8000:8000 quire     # --init: tini reaps orphaned soffice.bin processes
#
# The image's HEALTHCHECK probes the API; the worker and beat services override it in compose.
FROM debian:12-slim

ENV QUIRE_VENV=/opt/quire/venv \
    QUIRE_DATA_DIR=/var/lib/quire \
    PATH=/opt/quire/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8

# A non-root user with a home directory (for tools that want one; LibreOffice's HOME is its
# profile, inside its sandbox) and the one writable place Quire needs: QUIRE_DATA_DIR, holding
# scratch space and LibreOffice profiles, readable by that user only (0700, as `make run` makes it).
RUN groupadd --system --gid 10001 quire \
    && useradd --system --no-log-init --uid 10001 --gid quire \
        --create-home --home-dir /home/quire --shell /usr/sbin/nologin quire \
    && install -d -o quire -g quire -m 0700 /var/lib/quire

WORKDIR /opt/quire/src

# Step 1: system packages and Python dependencies. Only these files feed it, so editing the
# code does not re-download LibreOffice. bootstrap.sh runs apt-get update and install itself;
# the package lists are dropped in the same layer.
COPY pyproject.toml README.md ./
COPY requirements/runtime.txt requirements/
COPY infra/bootstrap.sh infra/
RUN PIP_NO_CACHE_DIR=1 QUIRE_VENV=/opt/quire/venv infra/bootstrap.sh \
    && rm -rf /var/lib/apt/lists/*

# Step 2: the code. The editable install from step 1 saw no packages yet, so remove
# bootstrap's stamp to make it install the project again (the locked packages are already
# there, and no apt-get runs: every system package is installed). Byte-compile as root, because the
# runtime user cannot write __pycache__ under /opt/quire/src.
COPY app/ app/
COPY workers/ workers/
COPY infra/ infra/
RUN rm -f /opt/quire/venv/.quire-installed \
    && PIP_NO_CACHE_DIR=1 QUIRE_VENV=/opt/quire/venv infra/bootstrap.sh \
    && rm -rf /var/lib/apt/lists/* \
    && /opt/quire/venv/bin/python -m compileall -q app workers infra

# Numeric, so that runtimes can verify it is not root without reading /etc/passwd (quire).
USER 10001:10001

EXPOSE 8000

# No curl in the image: Python's urllib does the probe (any error or non-2xx exits non-zero).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5)"]

CMD ["python", "-m", "uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
