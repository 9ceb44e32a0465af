"""A process a test started (a backend, the proxy): its output, and stopping it cleanly."""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


class ManagedProcess:
    """A started process whose stdout and stderr go to ``log_path``."""

    #: Seconds between SIGTERM and SIGKILL when stopping.
    stop_timeout = 10.0

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def output(self) -> str:
        """Everything the process has printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, wait, kill if it does not exit; return the exit code. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_scratch_root: Path | None = None


def scratch_dir(prefix: str) -> Path:
    """A new directory for one process's files (configuration, log), under one directory per
    test run that is removed when the run ends, so ``make test`` leaves nothing in /tmp."""
    global _scratch_root
    if _scratch_root is None:
        _scratch_root = Path(tempfile.mkdtemp(prefix="session-sidecar-tests-"))
        atexit.register(shutil.rmtree, _scratch_root, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch_root))
