# session-sidecar image: a wheel built in one stage, installed into a clean runtime in another.
#
#   docker build -t session-sidecar .
#   docker run --rm -p 8080:8080 -e SESSION_SECRET="$(docker run --rm session-sidecar keygen)" \
#     -v "$PWD/my-proxy.yaml:/etc/session-sidecar/proxy.yaml:ro" session-sidecar
#
# (a config whose listen is 0.0.0.0:8080 and admin_listen 0.0.0.0:9901, as config/compose.yaml)
#
# The base is pinned by tag only. Pin it by digest too (python:3.11-slim-bookworm@sha256:...)
# once it is built where a registry is reachable: this repo was written without access to one,
# so no digest could be read, and a guessed digest would only make every build fail.
# Without a registry, scripts/make-base-image.sh makes a local stand-in under the same name.

FROM python:3.11-slim-bookworm AS base

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
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps -w /wheels . \
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
