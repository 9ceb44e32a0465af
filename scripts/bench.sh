#!/usr/bin/env bash
# `make bench`: the sidecar beside nginx, a bare proxy and Apache, in one interleaved run; then
# the regression guard against docs/bench-baseline.json. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/bench_proxy.py "$@"
