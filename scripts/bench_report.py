"""What ``make bench`` shows: the tables, the chart and the regression guard.

All of it reads the results as they are written to the JSON file, so a past run's file can be
shown or charted again. The guard compares the sidecar's ratio to nginx and its CPU per request,
row by row, with a baseline file committed in the repository (docs/bench-baseline.json), and
warns loudly when either got more than 10% worse. Medians over rounds keep it quiet on noise.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: A ratio lower, or a CPU per request higher, than the baseline's by more than this warns.
THRESHOLD = 0.10
#: Past this median share of the cores taken by other processes, a run is too noisy to judge:
#: the guard still prints its comparisons, but does not sound the alarm.
BUSY = 0.10

#: The goals of issue 15: sidecar / nginx requests/s, with the same cookies, one worker each.
GOALS = {"none": 0.7, "hit4": 0.6, "miss4": 0.45, "hit40": 0.6}
P50_GOAL_MS, P99_GOAL_MS = 0.3, 1.0

COLOURS = {"nginx": "#2b8a3e", "sidecar": "#1c7ed6", "bare": "#868e96", "apache": "#e8590c"}

Results = dict[str, Any]


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def tables(results: Results) -> Iterator[str]:
    method = results["method"]
    machine = results["machine"]
    yield ""
    yield f"commit {results['commit']}, {results['date']}; {machine['summary']}"
    yield (
        f"{method['rounds']} rounds of {method['seconds']} s, medians; wrk -c"
        f"{method['connections']}; {'pinned' if method['pinned'] else 'not pinned'}; "
        f"load average at the start {machine['load_average']}; other processes took "
        f"{results.get('cpu_others', 0.0):.0%} of the cores (median over the runs)"
    )
    yield ""
    yield (
        "| workload | proxy | requests/s | x nginx (range) | p50 ms | p99 ms | CPU µs/req "
        "| peak RSS MiB | cores % proxy/backend/load/others | errors |"
    )
    yield "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in results["rows"]:
        for proxy, f in row["proxies"].items():
            ratio = ""
            if "ratio" in f:
                low, high = f["ratio_range"]
                ratio = f"{f['ratio']:.2f} ({low:.2f}-{high:.2f})"
            shares = _shares(f)
            yield (
                f"| {row['title']} | {proxy} | {f['rps']:,.0f} | {ratio} | {_ms(f['p50_ms'])} | "
                f"{_ms(f['p99_ms'])} | {f['cpu_us']:.0f} | {f['rss_mib']:.0f} | {shares} | "
                f"{f['errors']:.0f} |"
            )
    yield from _latency_table(results)
    yield from _workers_table(results)
    yield from _goals_table(results)


def _shares(f: dict[str, Any]) -> str:
    names = ("cpu_proxy", "cpu_backend", "cpu_load", "cpu_others")
    return "/".join(f"{100 * f[name]:.0f}" for name in names)


def _row(results: Results, key: str) -> dict[str, Any] | None:
    return next((row for row in results["rows"] if row["key"] == key), None)


def _latency_table(results: Results) -> Iterator[str]:
    row = _row(results, "latency")
    if row is None:
        return
    rate = results["method"]["rate"]
    yield ""
    yield f"Fixed rate: {rate:,} requests/s in all (hey -c 10 -q {rate // 10}), 4 KB session"
    yield ""
    yield "| proxy | achieved req/s | p50 ms | p99 ms | p50 - nginx | p99 - nginx | CPU µs/req |"
    yield "|---|---:|---:|---:|---:|---:|---:|"
    for proxy, f in row["proxies"].items():
        saturated = " (saturated)" if f["rps"] < 0.95 * rate else ""
        deltas = ["", ""]
        if proxy != "nginx" and "p50_delta_ms" in f:
            deltas = [f"{f['p50_delta_ms']:+.2f} ms", f"{f['p99_delta_ms']:+.2f} ms"]
        yield (
            f"| {proxy} | {f['rps']:,.0f}{saturated} | {_ms(f['p50_ms'])} | {_ms(f['p99_ms'])} "
            f"| {deltas[0]} | {deltas[1]} | {f['cpu_us']:.0f} |"
        )


def _workers_table(results: Results) -> Iterator[str]:
    row = _row(results, "workers2")
    if row is None:
        return
    one = _row(results, "hit4")
    yield ""
    yield (
        "Two workers (4 KB session, cache hit; wrk -t2). The load generator and the backend "
        "share the 2 cores with the proxy, so compare the scaling of the proxies with each "
        "other, in the same run, and read the CPU per request, which the sharing moves less."
    )
    yield ""
    yield (
        "| proxy | requests/s | x nginx | x its 1 worker | CPU µs/req, 2 w | CPU µs/req, 1 w "
        "| cores % proxy/backend/load/others | busiest process's part |"
    )
    yield "|---|---:|---:|---:|---:|---:|---:|---:|"
    for proxy, f in row["proxies"].items():
        single = one["proxies"].get(proxy) if one else None
        scaling = f"{f['scaling']:.2f}" if "scaling" in f else "-"
        cpu_one = f"{single['cpu_us']:.0f}" if single else "-"
        ratio = f"{f['ratio']:.2f}" if "ratio" in f else "-"
        shares = _shares(f)
        yield (
            f"| {proxy} | {f['rps']:,.0f} | {ratio} | {scaling} | {f['cpu_us']:.0f} | "
            f"{cpu_one} | {shares} | {f['cpu_busiest']:.2f} |"
        )


def _goals_table(results: Results) -> Iterator[str]:
    lines = []
    for key, goal in GOALS.items():
        row = _row(results, key)
        sidecar = row["proxies"].get("sidecar") if row else None
        if row and sidecar and "ratio" in sidecar:
            met = sidecar["ratio"] >= goal
            lines.append(
                f"| {row['title']}: sidecar ÷ nginx | ≥ {goal}x | {sidecar['ratio']:.2f}x "
                f"| {_yes(met)} |"
            )
    latency = _row(results, "latency")
    sidecar = latency["proxies"].get("sidecar") if latency else None
    if sidecar and "p50_delta_ms" in sidecar:
        for name, goal in (("p50", P50_GOAL_MS), ("p99", P99_GOAL_MS)):
            delta = sidecar[f"{name}_delta_ms"]
            lines.append(
                f"| {name} at the fixed rate, sidecar - nginx | ≤ {goal} ms | {delta:+.2f} ms "
                f"| {_yes(delta <= goal)} |"
            )
    workers = _row(results, "workers2")
    if workers:
        nginx, sidecar = workers["proxies"].get("nginx"), workers["proxies"].get("sidecar")
        if nginx and sidecar and "scaling" in nginx and "scaling" in sidecar:
            met = sidecar["scaling"] >= nginx["scaling"]
            lines.append(
                f"| 2 workers: sidecar's scaling ≥ nginx's | ≥ {nginx['scaling']:.2f}x "
                f"| {sidecar['scaling']:.2f}x | {_yes(met)} |"
            )
    if lines:
        yield ""
        yield "| goal (issue 15) | target | measured | met |"
        yield "|---|---:|---:|---|"
        yield from lines


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


# --- the chart -------------------------------------------------------------------------------


def chart(results: Results, path: Path) -> None:
    """Requests/s (saturated rows) and latency (every row) per workload, a bar per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    proxies: list[str] = []
    for row in rows:
        proxies += [p for p in row["proxies"] if p not in proxies]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9), constrained_layout=True)
    width = 0.8 / max(len(proxies), 1)

    def bars(axes: Any, selected: list[dict[str, Any]], value: str) -> None:
        for i, proxy in enumerate(proxies):
            xs, ys, ps = [], [], []
            for x, row in enumerate(selected):
                f = row["proxies"].get(proxy)
                if f is not None:
                    xs.append(x + (i - (len(proxies) - 1) / 2) * width)
                    ys.append(f[value])
                    ps.append(f.get("p99_ms", math.nan))
            colour = COLOURS.get(proxy, "#ae3ec9")  # purple: a --compare-with sidecar
            drawn = axes.bar(xs, ys, width, label=proxy, color=colour)
            if value == "rps":
                labels = [f"{y / 1000:.1f}k" if y >= 1000 else f"{y:.0f}" for y in ys]
                axes.bar_label(drawn, labels, fontsize=7, padding=2)
            else:
                axes.scatter(xs, ps, marker="_", s=120, color="black", zorder=3)
        axes.set_xticks(range(len(selected)), [row["label"] for row in selected], fontsize=8)

    throughput = [row for row in rows if row["kind"] == "throughput"]
    bars(top, throughput, "rps")
    top.set_ylabel("requests/s (wrk -c32, saturating)")
    top.legend(fontsize=8)
    top.set_title(
        f"session-sidecar beside nginx, a bare proxy and Apache: commit {results['commit']}, "
        f"{results['date']}\n{results['machine']['summary']}",
        fontsize=9,
    )
    bars(bottom, rows, "p50_ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency, ms (bar: p50, black tick: p99; log scale)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- the regression guard --------------------------------------------------------------------


def baseline_of(results: Results) -> dict[str, Any]:
    """What the guard keeps of a run: per saturated row, the sidecar's ratio and CPU per request.

    Not the fixed-rate row: hey's latencies come in 0.1 ms steps, and at that low rate the CPU
    per request depends on how requests happen to share the loop's turns (15% apart between
    rounds of one run here).
    """
    rows = {}
    for row in results["rows"]:
        sidecar, nginx = row["proxies"].get("sidecar"), row["proxies"].get("nginx")
        if sidecar is None or row["kind"] != "throughput":
            continue
        kept = {"cpu_us": round(sidecar["cpu_us"], 1)}
        if "ratio" in sidecar:
            kept["ratio"] = round(sidecar["ratio"], 4)
        if nginx is not None:
            kept["nginx_cpu_us"] = round(nginx["cpu_us"], 1)
        rows[row["key"]] = kept
    keep = ("date", "commit", "machine", "method")
    return {**{k: results[k] for k in keep}, "rows": rows}


def save_baseline(results: Results, path: Path) -> None:
    path.write_text(json.dumps(baseline_of(results), indent=1, ensure_ascii=False) + "\n")


def guard(results: Results, path: Path) -> list[str]:
    """Compare with the baseline file; print each comparison and warn loudly on a regression."""
    print(f"\nregression guard (warns past {THRESHOLD:.0%} worse than {path.name}):")
    if not path.exists():
        print(f"  no baseline at {path}: write one with --save-baseline")
        return []
    base = json.loads(path.read_text())
    same_machine = all(base["machine"].get(k) == results["machine"].get(k) for k in ("cpu", "cpus"))
    print(f"  baseline: commit {base['commit']}, {base['date']}, {base['machine']['summary']}")
    method, old_method = results["method"], base["method"]
    if (method["rounds"], method["seconds"]) != (old_method["rounds"], old_method["seconds"]):
        print(
            f"  note: this run has {method['rounds']} x {method['seconds']} s, the baseline "
            f"{old_method['rounds']} x {old_method['seconds']} s (fewer or shorter: noisier)"
        )
    if not same_machine:
        print("  note: not the baseline's CPU: CPU per request is compared relative to nginx's")
    warnings = []
    better = 0
    new_rows = baseline_of(results)["rows"]
    for key, new in new_rows.items():
        old = base["rows"].get(key)
        if old is None:
            continue
        # (what, now, then, +1 if higher is worse else -1, format)
        checks: list[tuple[str, float, float, int, str]] = []
        if "ratio" in new and "ratio" in old:
            checks.append(("sidecar ÷ nginx requests/s", new["ratio"], old["ratio"], -1, ".3f"))
        if same_machine:
            checks.append(("sidecar CPU µs/request", new["cpu_us"], old["cpu_us"], 1, ".1f"))
        elif "nginx_cpu_us" in new and "nginx_cpu_us" in old:
            now = new["cpu_us"] / new["nginx_cpu_us"]
            then = old["cpu_us"] / old["nginx_cpu_us"]
            checks.append(("sidecar CPU/request ÷ nginx's", now, then, 1, ".2f"))
        for what, now, then, worse, fmt in checks:
            change = now / then - 1
            line = f"{key:<9} {what}: {now:{fmt}} against {then:{fmt}} ({change:+.1%})"
            if change * worse > THRESHOLD:
                warnings.append(line)
                print(f"  WORSE {line}")
            elif change * worse < -THRESHOLD:
                better += 1
                print(f"  BETTER {line}")
            else:
                print(f"  ok    {line}")
    if better and not warnings:
        print("  better than the baseline: once confirmed, --save-baseline and commit the file")
    others = results.get("cpu_others", 0.0)
    if warnings and others > BUSY:
        print(
            f"  NOT JUDGED: other processes took {others:.0%} of the cores (median over the runs;"
            f" the guard judges below {BUSY:.0%}). Rerun on a quiet machine."
        )
        return []
    if warnings:
        bar = "!" * 100
        print(f"\n{bar}", file=sys.stderr)
        print(f"!!! REGRESSION: more than {THRESHOLD:.0%} worse than {path}:", file=sys.stderr)
        for line in warnings:
            print(f"!!!   {line}", file=sys.stderr)
        print(
            "!!! Rerun to rule out noise; if it holds, find the commit that did it.",
            file=sys.stderr,
        )
        print(f"{bar}\n", file=sys.stderr)
    return warnings
