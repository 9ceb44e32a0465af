"""One line on the terminal before a part of the run that would otherwise print nothing for long.

``pytest -q`` prints a dot per test and captures everything else, so a fixture that builds
images for five minutes looks like a hang. :func:`announce` writes past the capture, on a line
of its own: what is happening, and how long it usually takes.
"""

from __future__ import annotations

import contextlib

import pytest

PREFIX = "[make test]"


def announce(request: pytest.FixtureRequest, text: str) -> None:
    """Print ``text`` on the terminal now, whatever pytest captures."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    if reporter is None:  # -p no:terminal: nothing is shown, so nothing to say
        return
    capture = plugins.get_plugin("capturemanager")
    paused = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with paused:
        if reporter._tw.width_of_current_line:  # -q's dots: end their line first
            reporter.write("\n")
        reporter.write_line(f"{PREFIX} {text}")
        reporter.flush()
