"""The regression guard of ``make bench`` (scripts/bench_report.py), on results made up here.

Timing is not a test: these check only the guard's arithmetic, so that it warns on a real fall
past 10%, stays quiet inside it, and does not judge a run that other processes disturbed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from scripts.bench_report import guard, save_baseline

MACHINE = {"cpu": "Test CPU", "cpus": 2, "summary": "2 x Test CPU"}
METHOD = {"rounds": 3, "seconds": 4}


def results(ratio: float, cpu_us: float, others: float = 0.02, cpu: str = "Test CPU") -> Any:
    sidecar = {"ratio": ratio, "cpu_us": cpu_us}
    nginx = {"ratio": 1.0, "cpu_us": 20.0}
    return {
        "date": "today",
        "commit": "abc1234",
        "machine": {**MACHINE, "cpu": cpu},
        "method": METHOD,
        "cpu_others": others,
        "rows": [
            {
                "key": "hit4",
                "kind": "throughput",
                "proxies": {"nginx": nginx, "sidecar": sidecar},
            }
        ],
    }


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "bench-baseline.json"
    save_baseline(results(ratio=0.50, cpu_us=100.0), path)
    return path


def test_a_ratio_more_than_10_percent_lower_warns(baseline: Path) -> None:
    warnings = guard(results(ratio=0.44, cpu_us=100.0), baseline)
    assert len(warnings) == 1
    assert "sidecar ÷ nginx" in warnings[0]


def test_a_ratio_within_10_percent_does_not_warn(baseline: Path) -> None:
    assert guard(results(ratio=0.46, cpu_us=100.0), baseline) == []


def test_cpu_per_request_more_than_10_percent_higher_warns(baseline: Path) -> None:
    warnings = guard(results(ratio=0.50, cpu_us=112.0), baseline)
    assert len(warnings) == 1
    assert "CPU µs/request" in warnings[0]


def test_getting_better_never_warns(baseline: Path) -> None:
    assert guard(results(ratio=0.80, cpu_us=60.0), baseline) == []


def test_a_run_on_a_busy_machine_is_not_judged(baseline: Path) -> None:
    assert guard(results(ratio=0.30, cpu_us=150.0, others=0.40), baseline) == []


def test_on_another_cpu_cpu_per_request_is_compared_relative_to_nginx(baseline: Path) -> None:
    # Half the µs on a faster CPU, nginx's too: the same relative cost, no warning.
    faster = results(ratio=0.50, cpu_us=50.0, cpu="Faster CPU")
    faster["rows"][0]["proxies"]["nginx"]["cpu_us"] = 10.0
    assert guard(faster, baseline) == []
    slower_sidecar = copy.deepcopy(faster)
    slower_sidecar["rows"][0]["proxies"]["sidecar"]["cpu_us"] = 60.0
    assert len(guard(slower_sidecar, baseline)) == 1


def test_the_fixed_rate_row_is_not_guarded(tmp_path: Path) -> None:
    run = results(ratio=0.50, cpu_us=100.0)
    run["rows"][0]["kind"] = "latency"
    path = tmp_path / "bench-baseline.json"
    save_baseline(run, path)
    run["rows"][0]["proxies"]["sidecar"]["cpu_us"] = 200.0
    assert guard(run, path) == []


def test_no_baseline_file_is_no_warning(tmp_path: Path) -> None:
    assert guard(results(ratio=0.1, cpu_us=999.0), tmp_path / "missing.json") == []
