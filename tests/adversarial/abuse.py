"""What a resource-exhaustion test watches while it attacks: the workers' memory and CPU, and
a second, well-behaved client that must keep being served.

API::

    pids = worker_pids(proxy)                   # the processes that serve requests
    with WorkerWatch(pids) as watch, SecondClient(proxy.port) as bystander:
        ...                                     # the attack, for several seconds
    watch.peak_rss_growth()                     # bytes over each worker's RSS at the start
    watch.cpu_seconds()                         # CPU the workers used during the block
    bystander.assert_served(max_wait=3.0)       # every request answered, none slower

Everything is read from /proc, so it measures the real processes, not a model of them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType
from typing import Final, Self

from tests.integration.sidecar import RunningProxy

_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_TICK: Final = os.sysconf("SC_CLK_TCK")
MB: Final = 1024 * 1024


def worker_pids(proxy: RunningProxy, expected: int = 1, timeout: float = 10.0) -> list[int]:
    """The pids that serve requests: the proxy itself with one worker, else its children."""
    pid = proxy.process.pid
    if expected == 1:
        return [pid]
    deadline = time.monotonic() + timeout
    children: list[int] = []
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) >= expected:
            return children
        time.sleep(0.05)
    raise AssertionError(f"{len(children)} workers of {pid}, not {expected}")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(child) for child in f.read().split())
    return found


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (proc(5) fields 14, 15)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class WorkerWatch:
    """Samples the workers' RSS every ``interval`` seconds while the block runs."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.start_rss = {pid: rss_bytes(pid) for pid in pids}
        self.peak_rss = dict(self.start_rss)
        self._start_cpu = sum(cpu_seconds(pid) for pid in pids)
        self._cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self.pids:
                self.peak_rss[pid] = max(self.peak_rss[pid], rss_bytes(pid))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        for pid in self.pids:
            self.peak_rss[pid] = max(self.peak_rss[pid], rss_bytes(pid))
        self._cpu = sum(cpu_seconds(pid) for pid in self.pids) - self._start_cpu

    def peak_rss_growth(self) -> int:
        """The largest growth of any one worker's RSS over its value at the start."""
        return max(self.peak_rss[pid] - self.start_rss[pid] for pid in self.pids)

    def cpu_seconds(self) -> float:
        return self._cpu

    def summary(self) -> str:
        peaks = ", ".join(f"{pid}: {self.peak_rss[pid] / MB:.0f} MB" for pid in self.pids)
        return (
            f"peak RSS {peaks}; growth {self.peak_rss_growth() / MB:.1f} MB; CPU {self._cpu:.2f}s"
        )


class SecondClient:
    """A well-behaved client: one small GET at a time on a new connection, every ``pause``
    seconds, each with its own deadline; it records how long each took and what failed."""

    def __init__(
        self,
        port: int,
        target: str = "/bystander",
        pause: float = 0.1,
        timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port
        self.host = host
        self.target = target
        self.pause = pause
        self.timeout = timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        request = (
            f"GET {self.target} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n"
        ).encode()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection((self.host, self.port), timeout=self.timeout) as s:
                    s.settimeout(self.timeout)
                    s.sendall(request)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                if not data.startswith(b"HTTP/1.1 2"):
                    self.failures.append(repr(data[:40]))
                else:
                    self.latencies.append(time.monotonic() - started)
            except OSError as exc:
                self.failures.append(
                    f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
                )
            self._stop.wait(self.pause)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def assert_served(self, max_wait: float = 3.0, at_least: int = 5) -> None:
        """Every request succeeded, none waited more than ``max_wait`` (a liveness bound)."""
        assert not self.failures, f"the second client failed: {self.failures[:5]}"
        assert len(self.latencies) >= at_least, f"only {len(self.latencies)} requests served"
        worst = max(self.latencies)
        assert worst < max_wait, f"the second client waited {worst:.2f}s"
