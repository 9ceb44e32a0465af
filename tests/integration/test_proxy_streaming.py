"""Bodies stream both ways with bounded memory; framing and encodings pass through unchanged."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.integration.backends import RunningBackend, start_backend
from tests.integration.log_watch import WATCH
from tests.integration.proxy_client import RawConnection, peak_rss_bytes, raw_request
from tests.integration.scripted_backend import ScriptedBackend, canned_response
from tests.integration.sidecar import RunningProxy, base_config

pytestmark = [pytest.mark.integration, pytest.mark.system]

MIB = 1 << 20
BIG = 200 * MIB
#: The proxy's peak RSS must stay well below one big body.
PEAK_RSS_LIMIT = 150 * MIB
PATTERN = bytes(range(256))


@pytest.fixture(scope="module")
def python_backend() -> Iterator[RunningBackend]:
    with start_backend("python") as running:
        yield running


@pytest.fixture(scope="module")
def node_backend() -> Iterator[RunningBackend]:
    with start_backend("node") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(python_backend: RunningBackend) -> Iterator[RunningProxy]:
    with WATCH.start_proxy(base_config(python_backend.url)) as running:
        yield running


@pytest.fixture(scope="module")
def node_proxy(node_backend: RunningBackend) -> Iterator[RunningProxy]:
    """The Node backend reads request bodies as sent: no decompression, so hashes are of bytes."""
    with WATCH.start_proxy(base_config(node_backend.url)) as running:
        yield running


async def _blocks(block: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield block


async def _upload(url: str, block: bytes, count: int, length: bool) -> dict[str, object]:
    headers = {"Content-Length": str(len(block) * count)} if length else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=_blocks(block, count), headers=headers) as response,
    ):
        assert response.status == 200
        result: dict[str, object] = await response.json()
        return result


async def _download_digest(url: str, pause: float) -> tuple[int, int, str]:
    """Status, size and sha256 of a download read only after ``pause`` seconds."""
    digest = hashlib.sha256()
    size = 0
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await asyncio.sleep(pause)  # the proxy must hold back, not buffer the upstream
        async for chunk in response.content.iter_chunked(MIB):
            digest.update(chunk)
            size += len(chunk)
        return response.status, size, digest.hexdigest()


def _pattern_digest(size: int) -> str:
    block = PATTERN * (MIB // len(PATTERN))
    digest = hashlib.sha256()
    for _ in range(size // MIB):
        digest.update(block)
    digest.update(block[: size % MIB])
    return digest.hexdigest()


# --- large bodies ----------------------------------------------------------------------------


def test_200_mb_upload_streams_through_with_bounded_memory(proxy: RunningProxy) -> None:
    block = os.urandom(MIB)
    expected = hashlib.sha256()
    for _ in range(BIG // MIB):
        expected.update(block)
    result = asyncio.run(_upload(f"{proxy.url}/upload", block, BIG // MIB, length=True))
    assert result == {"bytes": BIG, "sha256": expected.hexdigest()}
    assert peak_rss_bytes(proxy.process.pid) < PEAK_RSS_LIMIT


def test_200_mb_download_streams_through_with_bounded_memory(proxy: RunningProxy) -> None:
    status, size, digest = asyncio.run(
        _download_digest(f"{proxy.url}/download?bytes={BIG}", pause=1.5)
    )
    assert (status, size) == (200, BIG)
    assert digest == _pattern_digest(BIG)
    assert peak_rss_bytes(proxy.process.pid) < PEAK_RSS_LIMIT


def test_chunked_upload_streams_through(proxy: RunningProxy) -> None:
    block = os.urandom(MIB // 4 + 3)
    result = asyncio.run(_upload(f"{proxy.url}/upload", block, 20, length=False))
    assert result == {"bytes": len(block) * 20, "sha256": hashlib.sha256(block * 20).hexdigest()}


def test_echo_streams_both_ways_at_once(proxy: RunningProxy) -> None:
    block = os.urandom(MIB)

    async def echo() -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{proxy.url}/echo", data=_blocks(block, 32)) as response,
        ):
            return await response.read()

    body = asyncio.run(asyncio.wait_for(echo(), 60))
    assert hashlib.sha256(body).digest() == hashlib.sha256(block * 32).digest()


# --- framing ---------------------------------------------------------------------------------


def test_bodiless_request_reaches_the_backend_without_body_or_chunked_framing(
    proxy: RunningProxy,
) -> None:
    reply = raw_request(proxy.port, "GET", "/whoami")
    headers = reply.json()["headers"]
    assert "transfer-encoding" not in headers
    assert "content-length" not in headers


def test_empty_body_with_content_length_zero_reaches_the_backend_empty(
    proxy: RunningProxy,
) -> None:
    reply = raw_request(proxy.port, "POST", "/upload", [("Content-Length", "0")])
    assert reply.json() == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_request_content_length_reaches_the_backend(proxy: RunningProxy) -> None:
    body = os.urandom(100_000)
    reply = raw_request(proxy.port, "POST", "/echo", body=body)
    # The backend echoes with the Content-Length it was given; it had no chunked framing.
    assert reply.header("Content-Length") == "100000"
    assert reply.header("Transfer-Encoding") is None
    assert reply.body == body


def test_response_content_length_passes_unchanged(proxy: RunningProxy) -> None:
    reply = raw_request(proxy.port, "GET", "/download?bytes=123457")
    assert reply.header("Content-Length") == "123457"
    assert reply.header("Transfer-Encoding") is None
    assert reply.body == (PATTERN * 483)[:123457]


def test_head_response_keeps_its_content_length_and_sends_no_body(
    node_proxy: RunningProxy,
) -> None:
    # The Node backend, because the Python one (aiohttp's StreamResponse) writes a body to HEAD.
    with RawConnection(node_proxy.port) as connection:
        connection.send("HEAD /download?bytes=300000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = connection.read_response("HEAD")
        # A body after the head would be read here as the next response.
        connection.send("GET /download?bytes=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        after = connection.read_response()
    assert (head.status, head.header("Content-Length")) == (200, "300000")
    assert (after.status, after.body) == (200, PATTERN[:10])


def test_compressed_upload_reaches_the_backend_byte_for_byte(node_proxy: RunningProxy) -> None:
    compressed = gzip.compress(PATTERN * 4000 + b"the end")
    reply = raw_request(
        node_proxy.port,
        "POST",
        "/upload",
        [("Content-Encoding", "gzip"), ("Content-Type", "application/octet-stream")],
        body=compressed,
    )
    assert reply.json() == {
        "bytes": len(compressed),
        "sha256": hashlib.sha256(compressed).hexdigest(),
    }


GZIPPED = gzip.compress(b"compressed response body " * 100)


@pytest.fixture(scope="module")
def gzip_proxy() -> Iterator[RunningProxy]:
    response = canned_response(
        [("Content-Type", "text/plain"), ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
        GZIPPED,
    )
    with (
        ScriptedBackend({"/gzip": response}) as backend,
        WATCH.start_proxy(base_config(backend.url)) as running,
    ):
        yield running


def test_response_content_encoding_passes_unchanged(gzip_proxy: RunningProxy) -> None:
    reply = raw_request(gzip_proxy.port, "GET", "/gzip", [("Accept-Encoding", "gzip")])
    assert reply.header("Content-Encoding") == "gzip"
    assert reply.header("Content-Length") == str(len(GZIPPED))
    assert reply.body == GZIPPED


# --- Expect: 100-continue -------------------------------------------------------------------------


def test_expect_100_continue_is_answered_before_the_body(proxy: RunningProxy) -> None:
    body = os.urandom(300_000)
    with RawConnection(proxy.port, timeout=5) as connection:
        connection.send(
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        interim = connection.read_head()  # times out (fails) if the proxy waits for the body
        assert interim.status == 100
        connection.send(body)
        reply = connection.read_response()
    assert reply.status == 200
    assert reply.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
