"""Session codec timings beside the bare primitives it is built from.

Run with ``make bench-codec``. For a 4 KB and a 40 KB session (realistic JSON whose content is
mostly random, so it barely compresses and 40 KB really spans ~10 chunks) it times the codec's
decode (cache miss and hit) and encode, and the same bytes through the standard library alone:
base64url, HMAC-SHA256 with ``hmac.compare_digest``, zlib and json. Each figure is the best of
several repeats of a timed loop, in microseconds per operation. Loops are timed in this
process's CPU time, so time spent preempted by other work on a shared machine does not count
(cache and memory-bandwidth contention still does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import platform
import random
import ssl
import sys
import time
import timeit
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.config import parse_config
from proxy.session_codec import SessionCodec, SessionState, normalize_session_json
from proxy.session_cookies import split_cookie_header
from proxy.session_exchange import Change, SessionExchange

SECRET = b"bench-secret-not-for-production-0123456789abcdef"
NAME = "session"
SIZES = {"4 KB": 4 * 1024, "40 KB": 40 * 1024}
#: Every operation is timed in PASSES rounds of REPEATS loops of about LOOP_SECONDS each, the
#: rounds interleaved so that a burst of load from elsewhere hits all rows alike; the fastest
#: loop counts.
PASSES = 5
REPEATS = 5
LOOP_SECONDS = 0.02
MISS = "decode, cache miss"
HIT = "decode, cache hit"
ENCODE = "encode"
PRIM_DECODE_JSON = "primitives: b64 + HMAC + inflate + json.loads"
PRIM_DECODE = "primitives: b64 + HMAC + inflate"
PRIM_ENCODE_JSON = "primitives: json.dumps + deflate + HMAC + b64"
PRIM_ENCODE = "primitives: deflate + HMAC + b64"
#: Cookies a real browser sends beside the session (analytics, consent, preferences).
OTHER_COOKIES = "_ga=GA1.2.1234567890.1700000000; consent=all; theme=dark; lang=en-GB"


@dataclass
class Measurement:
    """One operation being timed: ``best_us`` is the fastest loop so far, per operation."""

    row: str
    size: str
    op: Callable[[], object]
    number: int = 0
    best_us: float = float("inf")

    def calibrate(self) -> None:
        timer = timeit.Timer(self.op, timer=time.process_time)
        number = 1
        while (elapsed := timer.timeit(number)) < LOOP_SECONDS / 10:
            number *= 10
        self.number = max(1, round(number * LOOP_SECONDS / elapsed))

    def run(self) -> None:
        timer = timeit.Timer(self.op, timer=time.process_time)
        loops = timer.repeat(repeat=REPEATS, number=self.number)
        self.best_us = min(self.best_us, min(loops) / self.number * 1e6)


def realistic_session(target_bytes: int, seed: int) -> str:
    """Compact session JSON of about ``target_bytes``: a user, a CSRF token and a cart of items
    whose ids and references are random (so compression gains little, as with real ids)."""
    rng = random.Random(seed)

    def token(nbytes: int) -> str:
        return base64.urlsafe_b64encode(rng.randbytes(nbytes)).decode("ascii").rstrip("=")

    session: dict[str, object] = {
        "user": {
            "id": rng.randrange(10**9),
            "email": "ada.lovelace@example.com",
            "name": "Ada Lovelace",
            "roles": ["reader", "editor"],
        },
        "csrf": token(32),
        "locale": "en-GB",
        "flash": [],
    }
    cart: list[dict[str, object]] = []
    session["cart"] = cart
    while len(json.dumps(session, separators=(",", ":"))) < target_bytes:
        cart.append(
            {
                "sku": token(9),
                "qty": rng.randint(1, 5),
                "price": rng.randrange(100, 100_000),
                "ref": token(128),
            }
        )
    payload = normalize_session_json(json.dumps(session), max_bytes=1 << 20)
    assert payload is not None
    return payload


def operations(label: str, target: int, info: dict[str, str]) -> list[Measurement]:
    """The codec's operations and the bare primitives, set up on one session of ``target``."""
    payload = realistic_session(target, seed=target)
    encoder = SessionCodec([SECRET], name=NAME)
    cookies = encoder.encode(payload).cookies
    chunks = {i: c.value for i, c in enumerate(cookies)}
    header = "; ".join([OTHER_COOKIES, *(f"{c.name}={c.value}" for c in cookies)])
    token = "".join(chunks.values())
    info[label] = (
        f"{len(payload):,} B JSON -> {len(token):,} B token in {len(cookies)} chunks, "
        f"Cookie header {len(header):,} B"
    )

    miss = SessionCodec([SECRET], name=NAME, cache_entries=0)
    hit = SessionCodec([SECRET], name=NAME)
    assert miss.decode(chunks).state is SessionState.VALID
    assert hit.decode(chunks).payload == payload

    # The same bytes through the bare primitives.
    sign_key = encoder.keys.newest.sign_key
    name_bytes = NAME.encode("ascii") + b"\x00"
    signed, _, mac_b64 = token.rpartition(".")
    head_len = len(".".join(signed.split(".", 5)[:5])) + 1
    body_b64 = signed[head_len:]
    session_obj = json.loads(payload)

    def b64_decode() -> bytes:
        return base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))

    def hmac_verify() -> bool:
        mac = base64.urlsafe_b64decode(mac_b64 + "=")
        expected = hmac.digest(sign_key, name_bytes + signed.encode("ascii"), hashlib.sha256)
        return hmac.compare_digest(mac, expected)

    packed = b64_decode()
    raw = zlib.decompress(packed)
    assert hmac_verify() and raw.decode("ascii") == payload

    def primitives_decode_no_json() -> bytes:
        assert hmac_verify()
        return zlib.decompress(b64_decode())

    def primitives_decode() -> object:
        return json.loads(primitives_decode_no_json())

    head = signed[:head_len]

    def primitives_encode_no_json(data: bytes) -> str:
        body = base64.urlsafe_b64encode(zlib.compress(data, 6)).rstrip(b"=")
        mac = hmac.digest(sign_key, name_bytes + head.encode("ascii") + body, hashlib.sha256)
        return head + body.decode("ascii") + "." + base64.urlsafe_b64encode(mac).decode("ascii")

    def primitives_encode() -> str:
        return primitives_encode_no_json(json.dumps(session_obj, separators=(",", ":")).encode())

    raw_payload = payload.encode("ascii")

    # What a backend's response costs the proxy: the whole session again, or one key patched.
    config = parse_config(
        "secrets: ['${S}']\nsession: {max_json_bytes: 1048576}\n"
        "upstreams: [{url: 'http://127.0.0.1:1'}]\nlimits: {max_header_bytes: 1048576}\n",
        env={"S": SECRET.decode()},
    )
    exchange = SessionExchange(config, encoder)
    inbound = exchange.inbound(header)
    full = json.dumps({**session_obj, "flash": ["saved"]})
    patch = '{"flash":["saved"]}'
    now = time.time()
    assert exchange.outbound(inbound, [full], now).change is Change.SET
    assert exchange.outbound(inbound, [], now, [patch]).change is Change.PATCHED

    def normalize() -> str | None:
        return normalize_session_json(payload, max_bytes=1 << 20)

    timings: list[tuple[str, Callable[[], object]]] = [
        (MISS, lambda: miss.decode(chunks)),
        (HIT, lambda: hit.decode(chunks)),
        (PRIM_DECODE_JSON, primitives_decode),
        (PRIM_DECODE, primitives_decode_no_json),
        ("  base64url decode (body)", b64_decode),
        ("  HMAC-SHA256 + compare_digest", hmac_verify),
        ("  zlib decompress", lambda: zlib.decompress(packed)),
        ("  json.loads", lambda: json.loads(raw)),
        (ENCODE, lambda: encoder.encode(payload)),
        (PRIM_ENCODE_JSON, primitives_encode),
        (PRIM_ENCODE, lambda: primitives_encode_no_json(raw_payload)),
        ("normalize_session_json (backend sets a session)", normalize),
        (
            "X-Set-Session: the whole session re-sent",
            lambda: exchange.outbound(inbound, [full], now),
        ),
        (
            "X-Patch-Session: one key changed (19 B header)",
            lambda: exchange.outbound(inbound, [], now, [patch]),
        ),
        ("split_cookie_header (full Cookie header)", lambda: split_cookie_header(header, NAME)),
    ]
    return [Measurement(row, label, op) for row, op in timings]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    started = time.perf_counter()
    print("Session codec benchmark (scripts/bench_codec.py)")
    print(f"  platform  {platform.platform()}")
    print(f"  cpu       {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}")
    print(f"  libraries zlib {zlib.ZLIB_RUNTIME_VERSION}, {ssl.OPENSSL_VERSION}")
    info: dict[str, str] = {}
    measurements = [m for size, target in SIZES.items() for m in operations(size, target, info)]
    for m in measurements:
        m.calibrate()
    for _ in range(PASSES):
        for m in measurements:
            m.run()
    rows: dict[str, dict[str, float]] = {}
    for m in measurements:
        rows.setdefault(m.row, {})[m.size] = m.best_us
    print()
    for label, line in info.items():
        print(f"  {label:6} {line}")
    print()
    width = max(len(r) for r in rows)
    print(f"| {'µs per operation':{width}} | " + " | ".join(f"{s:>8}" for s in SIZES) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 9 + ":" for _ in SIZES) + "|")
    for row, times in rows.items():
        cells = " | ".join(f"{times[s]:8.1f}" for s in SIZES)
        print(f"| {row:{width}} | {cells} |")
    print()
    ratios = [
        ("miss / primitives incl. json.loads", MISS, PRIM_DECODE_JSON, "aim <= 1.1x"),
        ("miss / primitives excl. json.loads", MISS, PRIM_DECODE, "aim <= 1.1x"),
        ("miss / hit", MISS, HIT, "aim >= 10x"),
        ("encode / primitives incl. json.dumps", ENCODE, PRIM_ENCODE_JSON, ""),
        ("encode / primitives excl. json.dumps", ENCODE, PRIM_ENCODE, ""),
    ]
    for text, top, bottom, aim in ratios:
        values = "  ".join(f"{s}: {rows[top][s] / rows[bottom][s]:5.2f}x" for s in SIZES)
        print(f"  {text:38} {values}  {aim}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n  ({time.perf_counter() - started:.0f} s; load average {load:.2f} at the end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
