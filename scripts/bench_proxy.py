"""Proxy throughput beside nginx, in one run on this machine (``make bench``).

Starts the Go example backend, nginx (``proxy_pass``, one worker, keep-alive upstream) and the
sidecar (one worker), then drives each with wrk: the backend direct, nginx, and the sidecar
with no session, a 4 KB session and a 40 KB session. The proxies are pinned to CPU 0 and the
backend and wrk to the other CPUs, so both proxies get the same single core. Prints requests/s,
p50/p99 latency and the ratio to nginx; then streams 1 GiB up and down through the sidecar and
reports its peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from proxy.session_codec import SessionCodec, normalize_session_json  # noqa: E402

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"  # noqa: S105 (throwaway)
NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    large_client_header_buffers 8 128k;
    client_header_buffer_size 64k;
    proxy_buffer_size 64k;
    proxy_buffers 8 64k;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


#: The ceiling for any proxy built on aiohttp's server: its low-level server answering "ok"
#: with no upstream at all, on the same core and event loop.
AIOHTTP_HELLO = """
import asyncio, sys
from aiohttp import web
try:
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass
async def hello(request):
    return web.Response(body=b"ok")
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(web.Server(hello, access_log=None), "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    #: CPU time (user + system) the measured proxy process spent per request, in µs: unlike
    #: requests/s it hardly moves when a neighbour loads the machine.
    cpu_us: float = float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpus() -> tuple[str, str]:
    count = os.cpu_count() or 1
    if count < 2:
        return "0", "0"
    return "0", f"1-{count - 1}"


def pinned(cpu_list: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu_list, *command] if shutil.which("taskset") else command


def session_cookie(kb: int) -> str:
    codec = SessionCodec([SECRET.encode()], name="session")
    blob = base64.urlsafe_b64encode(os.urandom(kb * 1024 * 3 // 4)).decode()
    payload = normalize_session_json(json.dumps({"user": "bench", "blob": blob}), 1 << 20)
    assert payload is not None
    encoded = codec.encode(payload)
    return "; ".join(f"{c.name}={c.value}" for c in encoded.cookies)


def wrk(url: str, cpu: str, seconds: int, connections: int, cookie: str | None) -> WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cookie:
        command[1:1] = ["-H", f"Cookie: {cookie}"]
    out = subprocess.run(pinned(cpu, command), capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _latency(out, "50%")
    p99 = _latency(out, "99%")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    total = re.search(r"(\d+) requests in", out)
    return WrkResult(rps, p50, p99, errors, int(total.group(1)) if total else 0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (proc(5): fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="per run and round")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stream-mib", type=int, default=1024)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another version (git worktree add DIR COMMIT): its sidecar runs "
        "beside this one on the same core, interleaved in the same rounds",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "go", "curl"):
        if not shutil.which(tool):
            print(f"!!! {tool} is missing: run `make deps` (as root) first", file=sys.stderr)
            return 2
    proxy_cpu, other_cpu = cpus()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        go_bin = tmp / "backend-go"
        subprocess.run(
            ["go", "build", "-o", str(go_bin), "."],
            cwd=REPO / "examples/backends/go",
            check=True,
            env={
                **os.environ,
                "GOFLAGS": "-mod=mod",
                "GOPROXY": "off",
                "GOCACHE": str(tmp / "gocache"),
            },
        )
        backend_port, nginx_port, proxy_port = free_port(), free_port(), free_port()
        hello_port = free_port()
        log = (tmp / "processes.log").open("wb")
        processes.append(
            subprocess.Popen(
                pinned(other_cpu, [str(go_bin)]),
                env={**os.environ, "PORT": str(backend_port)},
                stdout=log,
                stderr=log,
            )
        )
        (tmp / "nginx.conf").write_text(
            NGINX_CONF.format(tmp=tmp, port=nginx_port, backend_port=backend_port)
        )
        processes.append(
            subprocess.Popen(
                pinned(proxy_cpu, ["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]),
                stdout=log,
                stderr=log,
            )
        )
        sidecars: dict[str, subprocess.Popen[bytes]] = {}
        sources = [("sidecar", REPO, proxy_port)]
        if args.baseline is not None:
            sources.append(("baseline", args.baseline.resolve(), free_port()))
        for label, source, port in sources:
            config = tmp / f"{label}.yaml"
            config.write_text(
                json.dumps(
                    {
                        "listen": f"127.0.0.1:{port}",
                        "workers": 1,
                        "log_format": "json",
                        "secrets": [SECRET],
                        "cookie": {"secure": False},
                        "upstreams": [{"url": f"http://127.0.0.1:{backend_port}", "name": "go"}],
                    }
                )
            )
            # `-m proxy` from the checkout's own directory runs that checkout's code.
            sidecars[label] = subprocess.Popen(
                pinned(proxy_cpu, [sys.executable, "-m", "proxy", "serve", "-c", str(config)]),
                cwd=source,
                stdout=subprocess.DEVNULL,  # the access log: measured as deployed, not kept
                stderr=log,
            )
            processes.append(sidecars[label])
        proxy = sidecars["sidecar"]
        processes.append(
            subprocess.Popen(
                pinned(proxy_cpu, [sys.executable, "-c", AIOHTTP_HELLO, str(hello_port)]),
                stdout=log,
                stderr=log,
            )
        )
        for port in (backend_port, nginx_port, hello_port, *(p for _, _, p in sources)):
            wait_port(port)

        cookie4, cookie40 = session_cookie(4), session_cookie(40)
        path = "/healthz"
        runs = [
            ("backend direct", backend_port, None),
            ("nginx proxy_pass", nginx_port, None),
            ("nginx, 4 KB cookie", nginx_port, cookie4),
            ("nginx, 40 KB cookie", nginx_port, cookie40),
            ("aiohttp hello (ceiling)", hello_port, None),
            ("sidecar, no session", proxy_port, None),
            ("sidecar, 4 KB session", proxy_port, cookie4),
            ("sidecar, 40 KB session", proxy_port, cookie40),
        ]
        if args.baseline is not None:
            base_port = sources[1][2]
            runs += [
                ("baseline, no session", base_port, None),
                ("baseline, 4 KB session", base_port, cookie4),
                ("baseline, 40 KB session", base_port, cookie40),
            ]
        measured = {port: sidecars[label].pid for label, _, port in sources}
        print(f"machine: {machine()}")
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s, median of {args.rounds} interleaved "
            f"rounds; proxies pinned to CPU {proxy_cpu}, "
            f"backend (Go) and wrk to CPU {other_cpu}"
        )
        for _, port, cookie in runs:  # warm-up: connection pools, caches
            wrk(f"http://127.0.0.1:{port}{path}", other_cpu, 1, args.connections, cookie)
        # Rounds interleave the runs, so a noisy neighbour hits all of them alike; each run's
        # figures are those of its median round by requests/s.
        rounds: dict[str, list[WrkResult]] = {name: [] for name, _, _ in runs}
        for _ in range(args.rounds):
            for name, port, cookie in runs:
                url = f"http://127.0.0.1:{port}{path}"
                pid = measured.get(port)
                before = cpu_seconds(pid) if pid else 0.0
                result = wrk(url, other_cpu, args.seconds, args.connections, cookie)
                if pid and result.requests:
                    result.cpu_us = (cpu_seconds(pid) - before) / result.requests * 1e6
                rounds[name].append(result)
        results = {
            name: sorted(found, key=lambda r: r.rps)[len(found) // 2]
            for name, found in rounds.items()
        }
        reference = results["nginx proxy_pass"].rps
        header = ("run", "requests/s", "p50 ms", "p99 ms", "x nginx", "CPU µs/req")
        print("\n| {:<24} | {:>10} | {:>7} | {:>7} | {:>7} | {:>10} | errors |".format(*header))
        print(f"|{'-' * 26}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 12}|--------|")
        for name, r in results.items():
            cpu = "" if r.cpu_us != r.cpu_us else f"{r.cpu_us:.0f}"  # NaN: not measured
            print(
                f"| {name:<24} | {r.rps:>10.0f} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | "
                f"{r.rps / reference:>7.2f} | {cpu:>10} | {r.errors:>6} |"
            )
        if args.baseline is not None:
            for kind in ("no session", "4 KB session", "40 KB session"):
                new, old = results[f"sidecar, {kind}"], results[f"baseline, {kind}"]
                print(
                    f"{kind}: requests/s {new.rps / old.rps:.3f}x the baseline's, "
                    f"CPU per request {new.cpu_us / old.cpu_us:.3f}x"
                )
        if args.stream_mib:
            stream(proxy, proxy_port, args.stream_mib, other_cpu)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def stream(proxy: subprocess.Popen[bytes], port: int, mib: int, cpu: str) -> None:
    size = mib * 1024 * 1024
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    down = subprocess.run(
        pinned(
            cpu,
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                f"{base}/download?bytes={size}",
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    down_s = time.perf_counter() - started
    started = time.perf_counter()
    with subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE) as source:
        up = subprocess.run(
            pinned(
                cpu,
                [
                    "curl",
                    "-sS",
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/octet-stream",
                    # -T streams stdin (chunked); --data-binary would load 1 GiB into memory.
                    "-T",
                    "-",
                    f"{base}/upload",
                ],
            ),
            stdin=source.stdout,
            capture_output=True,
            text=True,
            check=True,
        )
    up_s = time.perf_counter() - started
    received = json.loads(up.stdout)["bytes"]
    print(
        f"\n{mib} MiB download through the sidecar: {int(down.stdout)} bytes in {down_s:.1f}s "
        f"({mib / down_s:.0f} MiB/s)"
    )
    print(
        f"{mib} MiB upload through the sidecar:   {received} bytes in {up_s:.1f}s "
        f"({mib / up_s:.0f} MiB/s)"
    )
    print(f"sidecar peak memory (VmHWM) after both: {peak_rss_mb(proxy.pid):.0f} MiB")


if __name__ == "__main__":
    raise SystemExit(main())
