"""What ``make bench`` sends: the sessions, and the load generators that send them.

Sessions are made once per run from a fixed seed. The 4 KB session is 68 keys (``k00`` ...)
of 48 random letters each; the 40 KB one is 680 such keys. Random letters compress little, as
real ids and tokens do. The sidecar's cookies are made by its own codec, built from the very
configuration the sidecar under test reads. Apache gets the same 68 pairs, URL-encoded (the
format mod_session stores), in a cookie it issues itself.

Load: ``wrk`` (closed loop, saturating) for throughput, with a Lua script when every request
must carry another cookie; ``hey -q`` (rate-limited per worker) for latency at a fixed rate.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import resource
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

#: 256 byte values onto 52 letters (a slight bias, irrelevant here).
_LETTERS = bytes.maketrans(
    bytes(range(256)),
    bytes(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 52] for i in range(256)),
)

#: Every request carries the next Cookie header of the file given after ``--``, in turn.
ROTATE_LUA = """
local requests = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format(nil, nil, {["Cookie"] = line})
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"""


def session_content(rng: random.Random, keys: int) -> dict[str, str]:
    width = len(str(keys - 1))
    return {f"k{i:0{width}d}": rng.randbytes(48).translate(_LETTERS).decode() for i in range(keys)}


@dataclass(frozen=True)
class Sessions:
    """The Cookie headers of every workload, and what each must decode to."""

    content4: dict[str, str]
    content40: dict[str, str]
    hit4: str
    hit40: str
    #: One Cookie header a line, each a different 4 KB session.
    miss4_file: Path
    #: The 4 KB content for Apache: ``k00=...&k01=...``.
    apache_pairs: str


def make_sessions(
    config: Path,
    tmp: Path,
    content4: dict[str, str],
    rng: random.Random,
    miss_count: int,
) -> Sessions:
    """The cookies of the sidecar whose configuration file is ``config``, made by its codec."""
    from proxy.config import load_config
    from proxy.proxy_state import codec_from_config
    from proxy.session_codec import normalize_session_json

    codec = codec_from_config(load_config(config))

    def cookie(content: dict[str, str]) -> str:
        payload = normalize_session_json(json.dumps(content), codec.max_json_bytes)
        assert payload is not None
        return "; ".join(f"{c.name}={c.value}" for c in codec.encode(payload).cookies)

    content40 = session_content(rng, 680)
    miss_file = tmp / "miss-cookies.txt"
    with miss_file.open("w") as out:
        for _ in range(miss_count):
            out.write(cookie(session_content(rng, 68)) + "\n")
    return Sessions(
        content4=content4,
        content40=content40,
        hit4=cookie(content4),
        hit40=cookie(content40),
        miss4_file=miss_file,
        apache_pairs=urllib.parse.urlencode(content4),
    )


def first_miss_cookies(sessions: Sessions, count: int) -> list[str]:
    with sessions.miss4_file.open() as lines:
        return [next(lines).rstrip("\n") for _ in range(count)]


def get(port: int, path: str, cookie: str | None = None) -> tuple[int, dict[str, str], str]:
    """One request; the status, the headers (lower-case names) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read().decode("latin-1")
    finally:
        connection.close()


def issue_apache_cookie(port: int) -> str:
    """Let Apache itself encrypt the session the backend hands it (mod_session's SessionHeader)."""
    status, headers, _ = get(port, "/bench/issue-apache-session")
    match = re.match(r"(session=[^;]+)", headers.get("set-cookie", ""))
    if status != 200 or not match:
        raise RuntimeError(f"Apache issued no session cookie (status {status})")
    return match.group(1)


def echoed_session(port: int, cookie: str | None) -> tuple[str, str]:
    """The X-Session-Status and X-Session the backend got through the proxy on ``port``."""
    status, _, body = get(port, "/bench/echo-session", cookie)
    if status != 200:
        raise RuntimeError(f"port {port}: status {status} for /bench/echo-session")
    session_status, _, session = body.partition("|")
    return session_status, session


# --- load generators -------------------------------------------------------------------------


@dataclass
class Load:
    """What a load generator saw in one run, and the CPU it spent itself."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_s: float


def _run(command: list[str], cpu: str | None) -> tuple[str, float]:
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    # The generator is the only child the harness reaps meanwhile, so the growth of
    # RUSAGE_CHILDREN is its own CPU time.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out, spent


def wrk(
    url: str,
    seconds: int,
    *,
    connections: int = 32,
    threads: int = 1,
    cookie: str | None = None,
    cookie_file: Path | None = None,
    script: Path | None = None,
    cpu: str | None = None,
) -> Load:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if cookie:
        command += ["-H", f"Cookie: {cookie}"]
    if cookie_file is not None:
        assert script is not None
        command += ["-s", str(script), url, "--", str(cookie_file)]
    else:
        command.append(url)
    out, cpu_s = _run(command, cpu)
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    requests = int(_find(r"(\d+) requests in", out))
    return Load(requests, rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"), errors, cpu_s)


def hey(
    url: str,
    seconds: int,
    *,
    concurrency: int = 10,
    qps_per_worker: int = 100,
    cookie: str | None = None,
    cpu: str | None = None,
) -> Load:
    """``hey -c C -q Q``: each of C workers sends at most Q requests/s (C x Q in all)."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-q", str(qps_per_worker)]
    if cookie:
        command += ["-H", f"Cookie: {cookie}"]
    out, cpu_s = _run([*command, url], cpu)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    _, _, error_lines = out.partition("Error distribution:")
    failures = sum(int(n) for n in re.findall(r"\[(\d+)\]", error_lines))
    ok = codes.get(200, 0)
    return Load(
        requests=sum(codes.values()),
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=float(_find(r"50% in ([\d.]+) secs", out)) * 1000,
        p99_ms=float(_find(r"99% in ([\d.]+) secs", out)) * 1000,
        errors=sum(codes.values()) - ok + failures,
        cpu_s=cpu_s,
    )


def _find(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise RuntimeError(f"no {pattern!r} in the load generator's output:\n{out}")
    return match.group(1)


def _wrk_ms(out: str, percentile: str) -> float:
    match = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\b", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
