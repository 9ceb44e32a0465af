"""Soak the proxy: a long mix of session and streaming traffic, with its memory and fds watched.

Starts the Python example backend (``examples/backends/python/app.py``, a real aiohttp app)
and the proxy in front of it (``python -m proxy serve``, ``workers: 1``), the same way the
integration tests do (``tests/integration/backends.py`` and ``sidecar.py``). Then N clients,
each with its own cookie jar, drive a mix of:

- session reads (``GET /whoami``: the session the backend sees must be the one last written),
- session writes (``POST /session`` with a small, a 4 KB and a 40 KB JSON object) and clears,
- uploads (``POST /upload``, with Content-Length and chunked; size and SHA-256 checked),
- downloads (``GET /download``; every byte checked),
- WebSocket round trips (``/ws``: an echo, and the session the handshake carried).

Every response is checked. The proxy's RSS (``VmRSS``) and open file descriptors are sampled
once the warm-up (the first 2% of the run) is over and the clients are idle, every few seconds
while they run, and at the end with the clients idle again. Exits 1 if any request failed or
if RSS or fds are not flat within 10%. Loopback only; the run is bounded by ``--requests``
or ``--seconds``.

    .venv/bin/python scripts/soak.py --requests 1000000 [--clients 16] [--json report.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.backends import RunningBackend, start_backend  # noqa: E402
from tests.integration.sidecar import RunningProxy, base_config, start_proxy  # noqa: E402

#: Share of the run (requests or seconds) that is warm-up, before the first sample.
WARMUP_SHARE: Final = 0.02
#: The warm-up is never shorter than this: about 4,600 session writes, which fill the proxy's
#: cache of 4,096 verified tokens (SessionCodec's bound), so what is measured after it is the
#: steady state and not the cache filling up.
WARMUP_MIN_REQUESTS: Final = 20_000
#: RSS and fds count as flat when they grow by at most this share of their value after warm-up.
FLAT_WITHIN: Final = 0.10
#: Seconds the clients stay idle before a start or end sample, so nothing is in flight.
SETTLE_SECONDS: Final = 0.5
REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=60)

UPLOAD_SIZES: Final = (1024, 16 * 1024, 96 * 1024)
DOWNLOAD_SIZES: Final = (1024, 64 * 1024, 256 * 1024)
#: What the backend's /download sends: bytes 0..255 over and over.
PATTERN: Final = bytes(range(256)) * (max(DOWNLOAD_SIZES) // 256)
#: One random payload per upload size (random so that nothing on the way can compress it).
UPLOADS: Final = {size: os.urandom(size) for size in UPLOAD_SIZES}
UPLOAD_DIGESTS: Final = {size: hashlib.sha256(body).hexdigest() for size, body in UPLOADS.items()}
UPLOAD_PIECE: Final = 16 * 1024


def _blob(size: int) -> str:
    return os.urandom(size * 3 // 4).hex()[:size]


#: Filler for the 4 KB and 40 KB sessions; hex of random bytes compresses to about half.
BLOBS: Final = {"small": "", "4k": _blob(4 * 1024), "40k": _blob(40 * 1024)}

#: The mix, as operation name and weight.
MIX: Final = (
    ("read", 36),
    ("write-small", 10),
    ("write-4k", 10),
    ("write-40k", 3),
    ("clear", 7),
    ("upload-length", 8),
    ("upload-chunked", 8),
    ("download", 10),
    ("websocket", 8),
)


class CheckFailed(Exception):
    """A response that is not the one the operation expects; its message is the error kind."""


@dataclass
class Sample:
    seconds: float  #: since the measured phase began
    requests: int  #: done so far, warm-up included
    rss_kb: int
    fds: int
    pooled: int  #: of ``fds``, the proxy's TCP connections to the backend (its pool)


@dataclass
class SoakReport:
    requests: int
    warmup_requests: int
    measured_seconds: float
    requests_per_second: float
    clients: int
    errors: dict[str, int]
    error_examples: dict[str, str]
    by_operation: dict[str, int]
    rss_kb_start: int
    rss_kb_peak: int
    rss_kb_end: int
    fds_start: int
    fds_peak: int
    fds_end: int
    pooled_start: int
    pooled_end: int
    rss_flat: bool
    fds_flat: bool
    samples: list[Sample] = field(default_factory=list)
    machine: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and self.rss_flat and self.fds_flat


def rss_kb(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


def open_fds(pid: int, backend_port: int) -> tuple[int, int]:
    """All open fds of ``pid``, and how many of them are TCP connections to ``backend_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while listed
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    pooled = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == backend_port and fields[9] in inodes:
                pooled += 1
    return len(os.listdir(f"/proc/{pid}/fd")), pooled


def _sample(pid: int, backend_port: int, seconds: float, requests: int) -> Sample:
    fds, pooled = open_fds(pid, backend_port)
    return Sample(seconds, requests, rss_kb(pid), fds, pooled)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, load average {load:.1f} at start"
    )


class Budget:
    """How many more operations a phase may start: a count, a deadline, or both."""

    def __init__(self, requests: int | None, seconds: float | None) -> None:
        self.left = requests
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def take(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True


class Tally:
    def __init__(self) -> None:
        self.done = 0
        self.by_operation: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail[:300])


class CookieJar:
    """The cookies of one client, kept by name, whatever their size.

    aiohttp's own jar sends at most 8,190 bytes of Cookie header (``_MAX_COOKIE_HEADER_LENGTH``
    in aiohttp 3.14) and silently leaves the other cookies out, so a 40 KB session would reach
    the proxy with only two of its chunks. Host and path are always the same here.
    """

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}

    def update(self, response: aiohttp.ClientResponse) -> None:
        for line in response.headers.getall("Set-Cookie", []):
            pair, *attributes = line.split(";")
            name, _, value = pair.strip().partition("=")
            if any(a.strip().lower() == "max-age=0" for a in attributes):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value


class SoakClient:
    """One browser-like client: its own cookie jar, and the session it last wrote."""

    def __init__(self, number: int, base_url: str, seed: int) -> None:
        self.number = number
        self.base_url = base_url
        self.random = random.Random(seed * 1_000_003 + number)
        self.session: dict[str, Any] = {}
        self.writes = 0
        self.jar = CookieJar()
        self.http = self._connect()
        names, weights = zip(*MIX, strict=True)
        self.names: tuple[str, ...] = names
        self.weights: tuple[int, ...] = weights
        self.operations: dict[str, Callable[[], Awaitable[None]]] = {
            "read": self.read,
            "write-small": lambda: self.write("small"),
            "write-4k": lambda: self.write("4k"),
            "write-40k": lambda: self.write("40k"),
            "clear": self.clear,
            "upload-length": lambda: self.upload(chunked=False),
            "upload-chunked": lambda: self.upload(chunked=True),
            "download": self.download,
            "websocket": self.websocket,
        }

    async def run(self, budget: Budget, tally: Tally) -> None:
        while budget.take():
            name = self.random.choices(self.names, self.weights)[0]
            try:
                await self.operations[name]()
            except CheckFailed as failed:
                tally.error(f"{name}: {failed.args[0]}", str(failed.args[1:]))
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                tally.error(f"{name}: {type(exc).__name__}", repr(exc))
            tally.done += 1
            tally.by_operation[name] += 1

    def _connect(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=REQUEST_TIMEOUT,
            connector=aiohttp.TCPConnector(limit=4),
        )

    async def close(self) -> None:
        await self.http.close()

    async def reconnect(self) -> None:
        """Close the keep-alive connections (the cookies and the session stay)."""
        await self.http.close()
        self.http = self._connect()

    def expect_session(self, status: str | None, session_json: str | None) -> None:
        want_status = "valid" if self.session else "absent"
        if status != want_status:
            raise CheckFailed("session status", f"got {status}, want {want_status}")
        seen = json.loads(session_json) if session_json is not None else None
        if seen != self.session:
            raise CheckFailed("session mismatch", f"got {str(seen)[:120]}", self.session.get("n"))

    async def read(self) -> None:
        async with self.http.get(f"{self.base_url}/whoami", headers=self.jar.header()) as response:
            self.jar.update(response)
            body = await response.read()
            if response.status != 200:
                raise CheckFailed(f"status {response.status}", body[:200])
            seen = json.loads(body)
            self.expect_session(seen["status"], seen["session_raw"])

    async def write(self, size: str) -> None:
        self.writes += 1
        session = {"client": self.number, "n": self.writes, "size": size, "blob": BLOBS[size]}
        async with self.http.post(
            f"{self.base_url}/session", json=session, headers=self.jar.header()
        ) as response:
            self.jar.update(response)
            body = await response.read()
            if response.status != 200 or json.loads(body) != {"ok": True}:
                raise CheckFailed(f"status {response.status}", body[:200])
        self.session = session

    async def clear(self) -> None:
        async with self.http.post(
            f"{self.base_url}/session/clear", headers=self.jar.header()
        ) as response:
            self.jar.update(response)
            body = await response.read()
            if response.status != 200 or json.loads(body) != {"ok": True}:
                raise CheckFailed(f"status {response.status}", body[:200])
        self.session = {}

    async def upload(self, *, chunked: bool) -> None:
        size = self.random.choice(UPLOAD_SIZES)
        payload = UPLOADS[size]

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, size, UPLOAD_PIECE):
                yield payload[start : start + UPLOAD_PIECE]

        data: Any = pieces() if chunked else payload
        async with self.http.post(
            f"{self.base_url}/upload", data=data, headers=self.jar.header()
        ) as response:
            self.jar.update(response)
            body = await response.read()
            if response.status != 200:
                raise CheckFailed(f"status {response.status}", body[:200])
            if json.loads(body) != {"bytes": size, "sha256": UPLOAD_DIGESTS[size]}:
                raise CheckFailed("upload digest", body[:200], size)

    async def download(self) -> None:
        size = self.random.choice(DOWNLOAD_SIZES)
        async with self.http.get(
            f"{self.base_url}/download?bytes={size}", headers=self.jar.header()
        ) as response:
            self.jar.update(response)
            body = await response.read()
            if response.status != 200:
                raise CheckFailed(f"status {response.status}", body[:200])
            if body != PATTERN[:size]:
                raise CheckFailed("download body", f"{len(body)} bytes, want {size}")

    async def websocket(self) -> None:
        text = f"echo {self.number} {self.writes} {self.random.random()}"
        async with self.http.ws_connect(f"{self.base_url}/ws", headers=self.jar.header()) as ws:
            await ws.send_str(text)
            if (echoed := await ws.receive_str()) != text:
                raise CheckFailed("websocket echo", echoed[:120])
            await ws.send_str("session")
            handshake_session = await ws.receive_str()
        self.expect_session("valid" if self.session else "absent", handshake_session or "{}")


async def _sampler(
    pid: int, backend_port: int, tally: Tally, began: float, interval: float, samples: list[Sample]
) -> None:
    while True:
        await asyncio.sleep(interval)
        samples.append(_sample(pid, backend_port, time.monotonic() - began, tally.done))


async def drive(
    url: str,
    pid: int,
    backend_port: int,
    *,
    requests: int | None,
    seconds: float | None,
    clients: int,
    warmup_requests: int | None = None,
    sample_interval: float = 5.0,
    seed: int = 7,
    progress: bool = False,
) -> SoakReport:
    """Run the soak against a proxy already running at ``url`` whose process is ``pid``."""
    if requests is None and seconds is None:
        raise ValueError("give requests, seconds or both")
    warm_requests = None
    if warmup_requests is not None:
        warm_requests = warmup_requests
    elif requests is not None:
        warm_requests = min(requests // 2, max(WARMUP_MIN_REQUESTS, int(requests * WARMUP_SHARE)))
    warm_seconds = None if seconds is None else seconds * WARMUP_SHARE
    main_requests = None if requests is None or warm_requests is None else requests - warm_requests
    main_seconds = None if seconds is None or warm_seconds is None else seconds - warm_seconds

    tally = Tally()
    fleet = [SoakClient(n, url, seed) for n in range(clients)]
    try:
        warmup = Budget(warm_requests, warm_seconds)
        await asyncio.gather(*(client.run(warmup, tally) for client in fleet))
        warmup_done = tally.done
        # Idle samples are taken with no client connection open, so they count what the proxy
        # keeps by itself: its listener, logs, and the idle upstream pool.
        await asyncio.gather(*(client.reconnect() for client in fleet))
        await asyncio.sleep(SETTLE_SECONDS)
        began = time.monotonic()
        start = _sample(pid, backend_port, 0.0, tally.done)
        samples = [start]
        sampler = asyncio.create_task(
            _sampler(pid, backend_port, tally, began, sample_interval, samples)
        )
        reporter = asyncio.create_task(_progress(tally, began, warmup_done)) if progress else None
        measured = Budget(main_requests, main_seconds)
        await asyncio.gather(*(client.run(measured, tally) for client in fleet))
        elapsed = time.monotonic() - began
        sampler.cancel()
        if reporter is not None:
            reporter.cancel()
        await asyncio.gather(*(client.reconnect() for client in fleet))
        await asyncio.sleep(SETTLE_SECONDS)
        end = _sample(pid, backend_port, time.monotonic() - began, tally.done)
        samples.append(end)
    finally:
        await asyncio.gather(*(client.close() for client in fleet))

    rss_peak = max(s.rss_kb for s in samples)
    fds_peak = max(s.fds for s in samples)
    measured_done = tally.done - warmup_done
    return SoakReport(
        requests=tally.done,
        warmup_requests=warmup_done,
        measured_seconds=round(elapsed, 2),
        requests_per_second=round(measured_done / elapsed, 1) if elapsed else 0.0,
        clients=clients,
        errors=dict(tally.errors),
        error_examples=tally.examples,
        by_operation=dict(tally.by_operation),
        rss_kb_start=start.rss_kb,
        rss_kb_peak=rss_peak,
        rss_kb_end=end.rss_kb,
        fds_start=start.fds,
        fds_peak=fds_peak,
        fds_end=end.fds,
        pooled_start=start.pooled,
        pooled_end=end.pooled,
        # Memory: no sample, idle or busy, 10% above the start; the end not 10% below it.
        rss_flat=_within(end.rss_kb, start.rss_kb) and rss_peak <= start.rss_kb * (1 + FLAT_WITHIN),
        # Descriptors: compared idle to idle (busy samples count connections in flight), the
        # upstream pool apart: it holds as many idle connections as requests were last in
        # flight at once, up to one per client, so it is judged against that bound instead.
        fds_flat=_within(end.fds - end.pooled, start.fds - start.pooled) and end.pooled <= clients,
        samples=samples,
    )


def _within(value: int, reference: int) -> bool:
    """Flat: grown by at most FLAT_WITHIN. Falling is not a leak (idle connections close, the
    allocator returns memory), and the short run's few dozen fds may move by one or two."""
    return value <= max(reference * (1 + FLAT_WITHIN), reference + 2)


async def _progress(tally: Tally, began: float, warmup_done: int) -> None:
    while True:
        await asyncio.sleep(30)
        rate = (tally.done - warmup_done) / max(time.monotonic() - began, 1e-9)
        errors = sum(tally.errors.values())
        print(f"  {tally.done:>9,} requests, ~{rate:,.0f}/s, {errors} errors", flush=True)


class SoakRun:
    """The backend and the proxy for one soak; leaving the block stops both."""

    def __init__(self) -> None:
        self.backend: RunningBackend = start_backend("python")
        try:
            # The test configuration, with a limit high enough for a 40 KB session.
            self.proxy: RunningProxy = start_proxy(base_config(self.backend.url))
        except BaseException:
            self.backend.stop()
            raise

    def __enter__(self) -> SoakRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.proxy.stop()
        self.backend.stop()
        # The access log of a long soak is large; the run's figures do not need it.
        shutil.rmtree(self.proxy.config_path.parent, ignore_errors=True)

    def tracebacks(self) -> int:
        with self.proxy.log_path.open("rb") as log:
            return sum(line.startswith(b"Traceback") for line in log)


def run_soak(
    *,
    requests: int | None,
    seconds: float | None = None,
    clients: int = 16,
    warmup_requests: int | None = None,
    sample_interval: float = 5.0,
    progress: bool = False,
) -> SoakReport:
    """Start a backend and the proxy, soak them, and report (proxy-side failures included)."""
    about = machine()
    with SoakRun() as run:
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        report: SoakReport = runner(
            drive(
                run.proxy.url,
                run.proxy.process.pid,
                run.backend.port,
                requests=requests,
                seconds=seconds,
                clients=clients,
                warmup_requests=warmup_requests,
                sample_interval=sample_interval,
                progress=progress,
            )
        )
        if run.proxy.process.poll() is not None:
            report.errors["proxy exited"] = 1
        if tracebacks := run.tracebacks():
            report.errors["proxy log: Traceback"] = tracebacks
    report.machine = about
    return report


def summary(report: SoakReport) -> str:
    def mib(kb: int) -> str:
        return f"{kb / 1024:.1f} MiB"

    lines = [
        f"machine:     {report.machine}",
        f"requests:    {report.requests:,} ({report.warmup_requests:,} warm-up), "
        f"{report.clients} clients",
        f"requests/s:  {report.requests_per_second:,.0f} "
        f"(after warm-up, {report.measured_seconds:.0f} s)",
        "mix:         " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.by_operation.items())),
        f"errors:      {sum(report.errors.values())}",
        *(
            f"  {kind}: {count}  e.g. {report.error_examples.get(kind, '')}"
            for kind, count in sorted(report.errors.items())
        ),
        f"RSS:         start {mib(report.rss_kb_start)}, peak {mib(report.rss_kb_peak)}, "
        f"end {mib(report.rss_kb_end)}  -> {'flat' if report.rss_flat else 'NOT FLAT'}",
        f"fds:         start {report.fds_start}, end {report.fds_end} "
        f"(of them pooled to the backend {report.pooled_start}, {report.pooled_end}; "
        f"peak while busy {report.fds_peak})  -> {'flat' if report.fds_flat else 'NOT FLAT'}",
        f"result:      {'OK' if report.ok else 'FAILED'} (flat = within {FLAT_WITHIN:.0%})",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, help="total requests (default 1,000,000)")
    parser.add_argument("--seconds", type=float, help="run this long (with --requests: first)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--sample-interval", type=float, default=5.0, help="seconds")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = parser.parse_args()
    requests = args.requests if args.requests or args.seconds else 1_000_000
    report = run_soak(
        requests=requests,
        seconds=args.seconds,
        clients=args.clients,
        sample_interval=args.sample_interval,
        progress=True,
    )
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
