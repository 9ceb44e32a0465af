"""What the proxy must never print: secrets, cookie values and session content.

Tests start proxies through :meth:`LogWatch.start_proxy` and register every sensitive value
they handle; after each test module, ``conftest.py`` reads the output of every proxy the module
started and fails if any of those values (or a run of 36 or more of their characters) is in it.
"""

from __future__ import annotations

from typing import Any

from tests.integration.sidecar import SECRET_1, SECRET_2, RunningProxy, start_proxy

#: Values this long or longer are also looked for in pieces, so a truncated leak is caught.
_WINDOW = 24
_STEP = 12


class LogWatch:
    def __init__(self) -> None:
        self.proxies: list[RunningProxy] = []
        self.values: set[str] = set()
        self.reset()

    def reset(self) -> None:
        self.proxies = []
        self.values = {SECRET_1, SECRET_2}

    def start_proxy(
        self, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> RunningProxy:
        proxy = start_proxy(config, env)
        self.proxies.append(proxy)
        return proxy

    def sensitive(self, value: str) -> None:
        if len(value) >= 6:
            self.values.add(value)

    def leaks(self) -> list[str]:
        """One line per leaked value: which proxy printed it, and a few of its characters."""
        found = []
        for proxy in self.proxies:
            output = proxy.output()
            for value in self.values:
                if _appears(value, output):
                    found.append(f"proxy on port {proxy.port} printed {value[:8]!r}...")
        return found


def _appears(value: str, output: str) -> bool:
    if value in output:
        return True
    if len(value) < _WINDOW + _STEP:
        return False
    # Any leaked run of _WINDOW + _STEP characters contains one of these aligned pieces.
    return any(value[i : i + _WINDOW] in output for i in range(0, len(value) - _WINDOW + 1, _STEP))


WATCH = LogWatch()
