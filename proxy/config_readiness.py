"""The ``readiness:`` section: which upstreams ``/readyz`` needs to accept connections.

``require: all`` (the default) is ready only while every upstream accepts: right for a sidecar
in front of one backend, whose pod must leave the load balancer when that backend is down.
``require: any`` is ready while at least one does (several interchangeable backends), and a
list of names is ready while each named one does (optional upstreams, such as a static file
server, are then left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from proxy.config_reader import Section, kind, show
from proxy.config_upstreams import Upstream

ALL: Final = "all"
ANY: Final = "any"


@dataclass(frozen=True, slots=True)
class Readiness:
    #: ``"all"``, ``"any"``, or the names of the upstreams that must accept connections.
    require: str | tuple[str, ...] = ALL

    def probed(self, upstreams: Sequence[Upstream]) -> tuple[Upstream, ...]:
        """The upstreams /readyz probes: the named ones, or all of them."""
        if isinstance(self.require, tuple):
            return tuple(up for up in upstreams if up.name in self.require)
        return tuple(upstreams)

    def ready(self, probed: int, unreachable: int) -> bool:
        """Ready, with ``unreachable`` of the ``probed`` upstreams not accepting?"""
        if self.require == ANY:
            return unreachable < probed
        return unreachable == 0


def parse_readiness(raw: Any, upstreams: Sequence[Upstream], errors: list[str]) -> Readiness:
    s = Section(raw, "readiness", errors)
    value = s.get("require")
    s.check_unknown()
    if value is None:
        return DEFAULT_READINESS
    if isinstance(value, str) and value.lower() in (ALL, ANY):
        return Readiness(value.lower())
    if not isinstance(value, list) or not value:
        got = show(value) if isinstance(value, str) else kind(value)
        s.error("require", f"expected all, any or a list of upstream names, got {got}")
        return Readiness()
    known = {up.name for up in upstreams}
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in known:
            hint = f"; upstream names: {', '.join(sorted(known))}" if known else ""
            s.error(f"require[{i}]", f"{show(name)} names no upstream{hint}")
        elif name in names:
            s.error(f"require[{i}]", f"{name!r} is listed twice")
        else:
            names.append(name)
    return Readiness(tuple(names)) if len(names) == len(value) else Readiness()


DEFAULT_READINESS: Final = Readiness()
