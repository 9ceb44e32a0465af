"""stdout and stderr read together, as docs/deployment.md ("Reading stdout and stderr together")
tells an operator to (issue 18).

The proxy writes its access lines in batches and its process log at once, so a file that holds
both is not in time order; every line starts with its time, and the documented ``sort``
commands put the file in order. Here a proxy in front of a closed port writes both kinds (each
request is a 502 access line and an upstream-failure warning) into one file, and both commands
run on it as written.
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final, Literal

import pytest

from tests.integration.backends import REPO_ROOT, free_port
from tests.integration.log_watch import WATCH
from tests.integration.sidecar import base_config

pytestmark = pytest.mark.integration

DOC: Final = REPO_ROOT / "docs" / "deployment.md"
REQUESTS: Final = 5
#: Where each format keeps a line's time: the text format's first field, the JSON's first key.
TIME_AT_START: Final = {
    "text": re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) "),
    "json": re.compile(r'\{"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)",'),
}


def documented_sort(log_format: str) -> str:
    """The command docs/deployment.md gives for ``log_format``, as written."""
    block = re.search(r"```sh\n(sort [^`]*)```", DOC.read_text())
    assert block, "docs/deployment.md has no sort block"
    for line in block.group(1).splitlines():
        command, _, note = line.partition("# log_format: ")
        if note.startswith(log_format):
            return command.strip()
    raise AssertionError(f"docs/deployment.md gives no sort command for {log_format}")


def time_of(line: str, log_format: str) -> str:
    match = TIME_AT_START[log_format].match(line)
    assert match, f"no time at the start of {line!r}"
    return match.group(1)


def merged_output(log_format: str) -> str:
    """Both streams of a proxy whose every request is a 502 and a warning, in one file."""
    dead = f"http://127.0.0.1:{free_port()}"
    with WATCH.start_proxy(base_config(dead, log_format=log_format)) as proxy:
        for i in range(REQUESTS):
            request = urllib.request.Request(f"{proxy.url}/r{i}")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 502
    return proxy.output()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_both_streams_starts_with_its_time(
    log_format: Literal["text", "json"],
) -> None:
    lines = merged_output(log_format).splitlines()
    assert sum("502" in line and "/r" in line for line in lines) >= REQUESTS
    assert sum("WARNING" in line.upper() and "failed" in line for line in lines) >= REQUESTS
    for line in lines:
        time_of(line, log_format)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_documented_sort_puts_a_merged_file_in_time_order(
    log_format: Literal["text", "json"], tmp_path: Path
) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(merged_output(log_format))
    sort = documented_sort(log_format)
    done = subprocess.run(
        ["bash", "-c", sort], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True
    )
    lines = done.stdout.splitlines()
    assert sorted(lines) == sorted(log.read_text().splitlines())
    times = [time_of(line, log_format) for line in lines]
    assert times == sorted(times)
