# session-sidecar image: a wheel built in one stage, installed into a clean runtime in another.
#
#   docker build -t session-sidecar:dev .
#   docker run --rm -p 8080:8080 -e SESSION_SECRET="$(docker run --rm session-sidecar:dev keygen)" \
#     -v "$PWD/my-proxy.yaml:/etc/session-sidecar/proxy.yaml:ro" session-sidecar:dev
#
# (a config whose listen is 0.0.0.0:8080 and admin_listen 0.0.0.0:9901, as config/compose.yaml)
#
# Needs BuildKit (the default from Docker 23; DOCKER_BUILDKIT=1 on 20.10) for the secret mount.
# Behind a TLS-inspecting egress, give pip the CA bundle that trusts it; it is mounted for the one
# RUN step and is never in a layer:
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt -t session-sidecar:dev .
#
# The base is pinned by tag only. Pin it by digest too (python:3.11-slim-bookworm@sha256:...)
# where a registry is reachable: this repo is built and tested without one, so no digest could
# be read, and a guessed digest would only make every build fail. Without a registry,
# scripts/build-image.sh --local-bases builds on a Debian stand-in (scripts/make-base-image.sh)
# through PYTHON_IMAGE. No "# syntax=" line: it would pull a frontend image from a registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base

# --- build: the project's wheel plus the wheels of its dependencies, installed into a venv ---
# A venv rather than the system site-packages: it is one directory to copy, and it works on
# Debian's own python3 (PEP 668 refuses system-wide pip installs there) as on upstream's.
FROM base AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY proxy/ ./proxy/
# Every dependency used here ships manylinux wheels, so no compiler is needed in either stage.
# PIP_CERT only if a pip-ca secret was given: pip would refuse a bundle path that does not exist.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps -w /wheels . \
    && /opt/venv/bin/pip wheel --no-cache-dir -w /wheels /wheels/session_sidecar-*.whl \
    && /opt/venv/bin/pip install --no-cache-dir --no-index /wheels/*.whl

# --- runtime: the same base, the venv, nothing else ---
FROM base AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sidecar \
    && mkdir -p /etc/session-sidecar
COPY --from=build /opt/venv /opt/venv

# The configuration is mounted, not baked in: /etc/session-sidecar/proxy.yaml (read-only).
# Numeric USER so that "run as non-root" checks (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
# 8080 proxy traffic, 9901 admin (/healthz, /metrics): publish only 8080.
EXPOSE 8080 9901
# No curl in the image: the standard library asks the admin port. The config must put
# admin_listen on port 9901 for this check to see it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]
ENTRYPOINT ["session-sidecar"]
CMD ["serve", "-c", "/etc/session-sidecar/proxy.yaml"]
