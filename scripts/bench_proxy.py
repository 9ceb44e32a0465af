"""``make bench``: the sidecar beside nginx, a bare proxy and Apache, in one interleaved run.

Every proxy stands in front of the same nginx ``return 200`` backend. Each workload (a row) is
run against each proxy in turn, and the whole set again in every round, so a noisy moment of the
machine hits all proxies alike; a row's figures are the medians over the rounds, and a ratio to
nginx is the median of the per-round ratios (each proxy beside nginx in the same round).

Per row and proxy: requests/s, the ratio to nginx, p50/p99 latency, the proxy's CPU per request
(utime + stime of all its processes from /proc, over the run, divided by the requests) and its
peak RSS (VmHWM of all its processes, reset before each run). Then a table, a JSON file, a PNG
chart, and the regression guard against docs/bench-baseline.json. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import bench_load
import bench_report
from bench_servers import (
    REPO,
    Rig,
    Server,
    cpu_spent,
    cpu_times,
    machine_busy_seconds,
    peak_rss_mib,
    reset_peak_rss,
)

sys.path.insert(0, str(REPO))  # the sidecar's codec makes the cookies: this checkout's

SEED = 15
PROXIES = ("nginx", "sidecar", "bare", "apache")


@dataclass(frozen=True)
class Row:
    key: str
    #: For the tables and, shorter, the chart; ``{miss}`` and ``{rate}`` are filled in.
    title: str
    label: str
    proxies: tuple[str, ...]
    #: "throughput" (wrk, saturating) or "latency" (hey at a fixed rate).
    kind: str = "throughput"
    workers: int = 1
    #: The cookie every request carries: none, "hit4", "hit40" or "miss4" (rotating).
    session: str | None = None


ROWS = (
    Row("none", "no session", "no session", PROXIES),
    Row("hit4", "4 KB session, cache hit", "4 KB, hit", PROXIES, session="hit4"),
    Row(
        "miss4",
        "4 KB sessions, {miss} rotating (cache miss)",
        "4 KB, miss\n({miss} rotating)",
        PROXIES[:3],
        session="miss4",
    ),
    Row("hit40", "40 KB session, cache hit", "40 KB, hit", PROXIES[:3], session="hit40"),
    Row(
        "latency",
        "4 KB session, cache hit, {rate} req/s",
        "4 KB, hit,\n{rate} req/s",
        PROXIES,
        kind="latency",
        session="hit4",
    ),
    Row(
        "workers2",
        "2 workers, 4 KB session, cache hit",
        "2 workers,\n4 KB, hit",
        PROXIES[:3],
        workers=2,
        session="hit4",
    ),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3); medians")
    parser.add_argument("--seconds", type=int, default=4, help="per run (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds per run before round 1")
    keys = ",".join(row.key for row in ROWS)
    parser.add_argument("--rows", default=keys, help=f"comma-separated subset of {keys}")
    parser.add_argument(
        "--proxies",
        default=",".join(PROXIES),
        help="comma-separated subset of " + ",".join(PROXIES),
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    parser.add_argument(
        "--rate", type=int, default=1000, help="latency row: requests/s in all, hey -c 10"
    )
    parser.add_argument("--miss-sessions", type=int, default=8192, help="distinct 4 KB sessions")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="1-worker proxies on CPU 0, the backend and load generators on CPU 1",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="another checkout (git worktree add DIR COMMIT): its sidecar runs as one more "
        "proxy in the same rounds",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the files go")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--baseline-file", type=Path, default=REPO / "docs/bench-baseline.json")
    parser.add_argument(
        "--save-baseline", action="store_true", help="write this run's figures as the baseline"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when the regression guard warns"
    )
    parser.add_argument(
        "--stream-mib",
        type=int,
        default=0,
        help="also stream this many MiB down and up through the sidecar (Go example backend)",
    )
    args = parser.parse_args()
    args.rows = [row for row in ROWS if row.key in args.rows.split(",")]
    args.proxies = [p for p in PROXIES if p in args.proxies.split(",")]
    if not args.rows or not args.proxies or args.rounds < 1 or args.seconds < 1:
        parser.error("nothing to measure: check --rows, --proxies, --rounds and --seconds")
    return args


def main() -> int:
    args = parse_args()
    need = ["nginx", "wrk", "hey", "apache2", "taskset"]
    missing = [tool for tool in need if not shutil.which(tool)]
    if missing:
        print(
            f"!!! missing: {', '.join(missing)}: run `make deps` (as root) first", file=sys.stderr
        )
        return 2
    if "apache" in args.proxies and not Path("/usr/lib/apache2/modules/mod_session.so").exists():
        print("!!! Apache's mod_session is missing: run `make deps`", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    proxy_cpu, other_cpu = ("0", f"1-{cpus - 1}") if args.pin and cpus > 1 else (None, None)
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    started = time.time()
    try:
        with Rig(tmp) as rig:
            results = run(start(args, rig, tmp, proxy_cpu, other_cpu))
            if args.stream_mib:
                stream(rig, tmp, args.stream_mib, other_cpu)
    except BaseException:
        print(f"!!! the bench stopped; the servers' logs are kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    results["duration_s"] = round(time.time() - started)
    for line in bench_report.tables(results):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "benchmarks-results.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults: {json_path}")
    if not args.no_chart:
        chart = args.out / "benchmarks-chart.png"
        bench_report.chart(results, chart)
        print(f"chart:   {chart}")
    warnings = bench_report.guard(results, args.baseline_file)
    if args.save_baseline:
        bench_report.save_baseline(results, args.baseline_file)
        print(f"baseline written: {args.baseline_file}")
    return 3 if warnings and args.strict else 0


@dataclass
class Bench:
    """The running servers, the sessions they get, and how to load each of them."""

    args: argparse.Namespace
    backend: Server
    servers: dict[tuple[str, int], Server]
    #: "sidecar", and the --compare-with checkout's sidecar if any.
    sidecars: list[str]
    sessions: bench_load.Sessions
    apache_cookie: str | None
    rotate_script: Path
    #: taskset list for the load generators, or None.
    load_cpu: str | None

    def plan(self) -> list[tuple[Row, str]]:
        """Every run of a round, in order: (row, proxy)."""
        return [
            (row, proxy)
            for row in self.args.rows
            for proxy in [*row.proxies[:2], *self.sidecars[1:], *row.proxies[2:]]
            if (proxy, row.workers) in self.servers
        ]

    def cookie(self, row: Row, proxy: str) -> str | None:
        if row.session == "hit4":
            return self.apache_cookie if proxy == "apache" else self.sessions.hit4
        return self.sessions.hit40 if row.session == "hit40" else None

    def run(self, row: Row, proxy: str, seconds: int) -> dict[str, float]:
        server = self.servers[proxy, row.workers]
        url, cookie = server.url + "/", self.cookie(row, proxy)

        def load() -> bench_load.Load:
            if row.kind == "latency":
                workers = 10
                return bench_load.hey(
                    url,
                    seconds,
                    concurrency=workers,
                    qps_per_worker=max(1, self.args.rate // workers),
                    cookie=cookie,
                    cpu=self.load_cpu,
                )
            rotating = row.session == "miss4"
            return bench_load.wrk(
                url,
                seconds,
                connections=self.args.connections,
                threads=row.workers,
                cookie=cookie,
                cookie_file=self.sessions.miss4_file if rotating else None,
                script=self.rotate_script,
                cpu=self.load_cpu,
            )

        return measure(server, self.backend, load)


def start(
    args: argparse.Namespace,
    rig: Rig,
    tmp: Path,
    proxy_cpu: str | None,
    other_cpu: str | None,
) -> Bench:
    """Start the backend and every proxy the rows need, make the sessions and check them."""
    rng = random.Random(SEED)
    content4 = bench_load.session_content(rng, 68)
    backend = rig.backend(urllib.parse.urlencode(content4), other_cpu)
    servers: dict[tuple[str, int], Server] = {}
    sidecars = ["sidecar"] if "sidecar" in args.proxies else []
    other = args.compare_with.resolve() if args.compare_with is not None else None
    if other is not None and sidecars:
        sidecars.append(f"sidecar@{other.name}")
    for workers in sorted({row.workers for row in args.rows}):
        cpu = proxy_cpu if workers == 1 else None
        if "nginx" in args.proxies:
            servers["nginx", workers] = rig.nginx(backend, workers, cpu)
        if sidecars:
            servers["sidecar", workers] = rig.sidecar(backend, workers, cpu)
        if other is not None and sidecars:
            servers[sidecars[1], workers] = rig.sidecar(backend, workers, cpu, other, sidecars[1])
        if "bare" in args.proxies:
            servers["bare", workers] = rig.bare(backend, workers, cpu)
        if "apache" in args.proxies and workers == 1:
            servers["apache", 1] = rig.apache(backend, cpu)
    config = next((s.config for s in servers.values() if s.config is not None), None)
    config = config or write_codec_config(tmp)
    sessions = bench_load.make_sessions(config, tmp, content4, rng, args.miss_sessions)
    apache_cookie = None
    if ("apache", 1) in servers:
        apache_cookie = bench_load.issue_apache_cookie(servers["apache", 1].port)
    check_sessions(servers, sidecars, sessions, apache_cookie)
    script = tmp / "rotate.lua"
    script.write_text(bench_load.ROTATE_LUA)
    return Bench(args, backend, servers, sidecars, sessions, apache_cookie, script, other_cpu)


def run(bench: Bench) -> dict[str, object]:
    args, plan = bench.args, bench.plan()
    print(f"machine: {machine()['summary']}")
    print(
        f"{len(plan)} runs a round, {args.rounds} rounds of {args.seconds} s, "
        f"{'pinned' if args.pin else 'not pinned'}; warm-up {args.warmup} s each"
    )
    if args.warmup:
        for row, proxy in plan:
            bench.run(row, proxy, args.warmup)
    samples: dict[tuple[str, str], list[dict[str, float]]] = {
        (row.key, proxy): [] for row, proxy in plan
    }
    for round_no in range(args.rounds):
        for row in args.rows:
            # Each round starts the row with another proxy, so none always runs right after
            # another one's load (caches, clock frequency, a neighbour's turn).
            order = [proxy for r, proxy in plan if r == row]
            shift = round_no % len(order) if order else 0
            for proxy in order[shift:] + order[:shift]:
                sample = bench.run(row, proxy, args.seconds)
                samples[row.key, proxy].append(sample)
                print(
                    f"  round {round_no + 1} {row.key:<9} {proxy:<16} "
                    f"{sample['rps']:>9.0f} req/s  {sample['cpu_us']:>6.0f} µs/req  "
                    f"errors {sample['errors']:.0f}",
                    flush=True,
                )
    return summarize(args, samples)


def measure(
    server: Server, backend: Server, load: Callable[[], bench_load.Load]
) -> dict[str, float]:
    pids, backend_pids = server.pids(), backend.pids()
    reset_peak_rss(pids)
    proxy_before, backend_before = cpu_times(pids), cpu_times(backend_pids)
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    seen = load()
    elapsed = time.monotonic() - started
    busy = machine_busy_seconds() - busy_before
    pids = server.pids()
    proxy_after = cpu_times(pids)
    proxy_cpu = cpu_spent(proxy_before, proxy_after)
    per_process = [t - proxy_before.get(pid, 0.0) for pid, t in proxy_after.items()]
    backend_cpu = cpu_spent(backend_before, cpu_times(backend_pids))
    capacity = elapsed * (os.cpu_count() or 1)
    return {
        "rps": seen.rps,
        "requests": seen.requests,
        "p50_ms": seen.p50_ms,
        "p99_ms": seen.p99_ms,
        "errors": seen.errors,
        "cpu_us": proxy_cpu / max(seen.requests, 1) * 1e6,
        "rss_mib": peak_rss_mib(pids),
        # Shares of all the machine's cores over the run: who had the CPU.
        "cpu_proxy": proxy_cpu / capacity,
        "cpu_backend": backend_cpu / capacity,
        "cpu_load": seen.cpu_s / capacity,
        # The rest of the machine's busy time: other processes (and kernel work that no process
        # is charged for). A high share means a noisy run.
        "cpu_others": max(0.0, busy - proxy_cpu - backend_cpu - seen.cpu_s) / capacity,
        # The busiest process's part of the proxy's CPU: with 2 workers, 0.5 is an even split.
        "cpu_busiest": max(per_process, default=0.0) / proxy_cpu if proxy_cpu else 0.0,
    }


def summarize(
    args: argparse.Namespace, samples: dict[tuple[str, str], list[dict[str, float]]]
) -> dict[str, object]:
    rows = []
    for row in args.rows:
        proxies: dict[str, dict[str, object]] = {}
        for key, found in samples.items():
            if key[0] != row.key:
                continue
            figures: dict[str, object] = {
                name: statistics.median(s[name] for s in found) for name in found[0]
            }
            figures["errors"] = sum(s["errors"] for s in found)
            figures["rss_mib"] = max(s["rss_mib"] for s in found)
            figures["rounds"] = found
            nginx = samples.get((row.key, "nginx"))
            if nginx:
                ratios = [s["rps"] / n["rps"] for s, n in zip(found, nginx, strict=True)]
                figures["ratio"] = statistics.median(ratios)
                figures["ratio_range"] = [min(ratios), max(ratios)]
                if row.kind == "latency":
                    for name in ("p50_ms", "p99_ms"):
                        deltas = [s[name] - n[name] for s, n in zip(found, nginx, strict=True)]
                        figures[name.replace("_ms", "_delta_ms")] = statistics.median(deltas)
            one_worker = samples.get(("hit4", key[1]))
            if row.workers > 1 and one_worker:
                scaling = [s["rps"] / o["rps"] for s, o in zip(found, one_worker, strict=True)]
                figures["scaling"] = statistics.median(scaling)
            proxies[key[1]] = figures
        names = {"miss": f"{args.miss_sessions:,}", "rate": f"{args.rate:,}"}
        rows.append(
            {
                "key": row.key,
                "title": row.title.format(**names),
                "label": row.label.format(**names),
                "kind": row.kind,
                "workers": row.workers,
                "proxies": proxies,
            }
        )
    every = [sample for found in samples.values() for sample in found]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Median share of the cores that other processes took during the runs (see measure()).
        "cpu_others": statistics.median(s["cpu_others"] for s in every),
        "commit": commit(),
        "machine": machine(),
        "method": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "connections": args.connections,
            "rate": args.rate,
            "miss_sessions": args.miss_sessions,
            "pinned": args.pin,
            "command": " ".join(["scripts/bench_proxy.py", *sys.argv[1:]]),
        },
        "rows": rows,
    }


def write_codec_config(tmp: Path) -> Path:
    """A sidecar configuration for the codec alone, when no sidecar runs (--proxies)."""
    from bench_servers import MAX_CHUNKS, SECRET

    config = tmp / "codec.yaml"
    config.write_text(
        json.dumps(
            {
                "secrets": [SECRET],
                "cookie": {"secure": False, "max_chunks": MAX_CHUNKS},
                "upstreams": [{"url": "http://127.0.0.1:9", "name": "app"}],
            }
        )
    )
    return config


def check_sessions(
    servers: dict[tuple[str, int], Server],
    sidecars: list[str],
    sessions: bench_load.Sessions,
    apache_cookie: str | None,
) -> None:
    """Before measuring: every proxy answers, and decodes the sessions it is meant to."""
    expected4 = json.dumps(sessions.content4, sort_keys=True)
    expected40 = json.dumps(sessions.content40, sort_keys=True)
    for (name, workers), server in servers.items():
        where = f"{name} ({workers} worker{'s' if workers > 1 else ''})"
        if name in sidecars:
            cases = [(None, "absent", None), (sessions.hit4, "valid", expected4)]
            cases.append((sessions.hit40, "valid", expected40))
            cases += [(c, "valid", None) for c in bench_load.first_miss_cookies(sessions, 2)]
            for cookie, want_status, want in cases:
                status, session = bench_load.echoed_session(server.port, cookie)
                got = json.dumps(json.loads(session), sort_keys=True) if session else None
                if status != want_status or (want is not None and got != want):
                    raise RuntimeError(f"{where}: X-Session-Status {status!r}, wrong session")
        elif name == "apache":
            assert apache_cookie is not None
            if bench_load.echoed_session(server.port, None)[1]:
                raise RuntimeError("apache: a session without a cookie")
            if bench_load.echoed_session(server.port, apache_cookie)[1] != sessions.apache_pairs:
                raise RuntimeError("apache: its own session cookie did not reach the backend")
        else:
            bench_load.echoed_session(server.port, sessions.hit4)


def stream(rig: Rig, tmp: Path, mib: int, cpu: str | None) -> None:
    """1 GiB (or ``mib``) down and up through a sidecar in front of the Go example backend."""
    from bench_servers import free_port

    go_bin = tmp / "backend-go"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOCACHE": str(tmp / "go")}
    subprocess.run(
        ["go", "build", "-o", str(go_bin), "."],
        cwd=REPO / "examples/backends/go",
        check=True,
        env=env,
    )
    port = free_port()
    go = rig.start("go", 1, port, [str(go_bin)], cpu=cpu, env={**os.environ, "PORT": str(port)})
    sidecar = rig.sidecar(go, 1, None, name="sidecar-stream")
    size = mib * 1024 * 1024
    taskset = ["taskset", "-c", cpu] if cpu else []
    download, upload = f"{sidecar.url}/download?bytes={size}", f"{sidecar.url}/upload"
    binary = "Content-Type: application/octet-stream"
    reset_peak_rss(sidecar.pids())
    started = time.perf_counter()
    down = subprocess.run(
        [*taskset, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", download],
        capture_output=True,
        text=True,
        check=True,
    )
    down_s = time.perf_counter() - started
    started = time.perf_counter()
    with subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE) as src:
        # -T - streams stdin (chunked); --data-binary would hold it all in memory.
        up = subprocess.run(
            [*taskset, "curl", "-sS", "-X", "POST", "-H", binary, "-T", "-", upload],
            stdin=src.stdout,
            capture_output=True,
            text=True,
            check=True,
        )
    up_s = time.perf_counter() - started
    received = json.loads(up.stdout)["bytes"]
    print(f"\n{mib} MiB down through the sidecar: {down.stdout} bytes, {mib / down_s:.0f} MiB/s")
    print(f"{mib} MiB up through the sidecar:   {received} bytes, {mib / up_s:.0f} MiB/s")
    print(f"sidecar peak RSS over both: {peak_rss_mib(sidecar.pids()):.0f} MiB")


def commit() -> str:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "proxy")
    return f"{head}+changes" if dirty else head


def machine() -> dict[str, object]:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    names = ["nginx-light", "nginx", "apache2", "wrk", "hey"]
    packages = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *names],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    tools = [line for line in packages if line.strip() and " " in line.strip()]
    libraries = [f"{name} {metadata.version(name)}" for name in ("aiohttp", "uvloop")]
    python = f"CPython {platform.python_version()}"
    cpus = os.cpu_count()
    return {
        "cpu": model,
        "cpus": cpus,
        "kernel": platform.release(),
        "python": python,
        "software": [*libraries, *tools],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "summary": f"{cpus} x {model}, Linux {platform.release()}, {python}",
    }


if __name__ == "__main__":
    raise SystemExit(main())
