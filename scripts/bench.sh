#!/usr/bin/env bash
# `make bench`: proxy throughput beside nginx, and 1 GiB streamed each way. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/bench_proxy.py "$@"
