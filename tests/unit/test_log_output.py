"""Non-blocking stdout and stderr: a stalled reader costs lines, counted, never a blocked loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.log_output import LogOutput

LINE = "x" * 99 + "\n"  # 100 bytes


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)  # a small pipe fills at once
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            piece = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not piece:
            return data
        data += piece


def test_a_pipe_is_reopened_so_the_original_description_stays_blocking(
    pipe: tuple[int, int],
) -> None:
    output = LogOutput(pipe[1], "stdout")
    assert output.fd != pipe[1]
    assert os.get_blocking(pipe[1])
    assert not os.get_blocking(output.fd)
    os.close(output.fd)


def test_a_full_pipe_never_blocks_and_drops_past_the_buffer(pipe: tuple[int, int]) -> None:
    output = LogOutput(pipe[1], "stdout", buffer_bytes=10_000)
    started = time.monotonic()
    for _ in range(1000):  # 100 KB into a 4 KB pipe that nobody reads
        output.write(LINE)
    assert time.monotonic() - started < 1.0
    # The pipe holds 4096 bytes (40 whole lines), the buffer 100 lines; the rest is dropped.
    assert output.dropped == 1000 - 40 - 100
    assert output.take_dropped() == 860
    assert output.take_dropped() == 0
    os.close(output.fd)


def test_queued_lines_follow_in_order_once_the_reader_resumes(pipe: tuple[int, int]) -> None:
    output = LogOutput(pipe[1], "stdout", buffer_bytes=100_000)
    lines = [f"{i:05d}".ljust(99, "-") + "\n" for i in range(200)]

    async def scenario() -> bytes:
        for line in lines:
            output.write(line)
        received = b""
        deadline = time.monotonic() + 5
        while len(received) < 200 * 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the loop drains as the pipe empties
            received += read_all(pipe[0])
        return received

    assert asyncio.run(scenario()).decode() == "".join(lines)
    assert output.dropped == 0
    os.close(output.fd)


def test_drops_are_reported_once_and_again_on_recovery(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    output = LogOutput(pipe[1], "stdout", buffer_bytes=1000)
    with caplog.at_level(logging.WARNING, logger="session_sidecar.log_output"):
        for _ in range(200):
            output.write(LINE)
        read_all(pipe[0])
        output.write(LINE)  # no loop: the next write drains what is queued first
        output.write(LINE)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "stdout is not being read: dropping log lines until it drains "
        '(counted in session_sidecar_log_lines_dropped_total{stream="stdout"})',
        "stdout drains again; 150 log line(s) were dropped meanwhile",
    ]
    os.close(output.fd)


def test_a_closed_reader_is_reported_once_and_never_raises(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    output = LogOutput(pipe[1], "stdout")
    os.close(pipe[0])
    with caplog.at_level(logging.WARNING, logger="session_sidecar.log_output"):
        output.write(LINE)
        output.write(LINE)
    assert [r.getMessage() for r in caplog.records] == [
        "cannot write to stdout: Broken pipe; its lines are dropped"
    ]
    assert output.dropped == 1
    os.close(output.fd)


def test_a_regular_file_is_written_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    output = LogOutput(fd, "stdout")
    assert output.fd == fd
    output.write(LINE)
    os.close(fd)
    assert path.read_text() == LINE


def test_close_writes_what_is_queued_when_the_reader_catches_up(pipe: tuple[int, int]) -> None:
    output = LogOutput(pipe[1], "stdout", buffer_bytes=100_000)
    for _ in range(60):  # 6 KB: 4 KB in the pipe, the rest queued
        output.write(LINE)
    assert read_all(pipe[0]) == LINE.encode() * 40
    output.close(timeout=1.0)
    assert read_all(pipe[0]) == LINE.encode() * 20
    os.close(output.fd)
