"""An ``https://`` upstream: TLS with the certificate verified, sessions as over plain HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.backends import free_port
from tests.integration.certificates import make_certificate
from tests.integration.log_watch import WATCH
from tests.integration.processes import ManagedProcess
from tests.integration.proxy_client import CookieClient
from tests.integration.sidecar import base_config

pytestmark = pytest.mark.integration

#: A small HTTPS backend: echoes the session headers; POST /session sets the session.
TLS_BACKEND = textwrap.dedent(
    """
    import json, ssl, sys
    from aiohttp import web

    async def handle(request):
        body = {"tls": True, "session": request.headers.get("X-Session"),
                "status": request.headers.get("X-Session-Status")}
        headers = {}
        if request.method == "POST":
            headers["X-Set-Session"] = await request.text()
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), ssl_context=context,
                print=lambda *args: print("listening", flush=True))
    """
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_backend(
    certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("tls-backend") / "backend.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", TLS_BACKEND, str(port), *map(str, certificate)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    with ManagedProcess(process, log_path) as backend:
        for _ in range(200):
            if "listening" in backend.output() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert "listening" in backend.output(), backend.output()
        yield port


def test_https_upstream_is_reached_over_verified_tls(
    tls_backend: int, certificate: tuple[Path, Path]
) -> None:
    config = base_config(f"https://localhost:{tls_backend}")
    # The proxy trusts the test's certificate through the standard OpenSSL variable.
    with (
        WATCH.start_proxy(config, env={"SSL_CERT_FILE": str(certificate[0])}) as proxy,
        CookieClient(proxy.url) as client,
    ):
        reply = client.post("/session", json={"user": "over-tls"})
        assert reply.status == 200
        seen = client.get("/whoami").json()
        assert seen["tls"] is True
        assert json.loads(seen["session"]) == {"user": "over-tls"}
        assert seen["status"] == "valid"


def test_https_upstream_with_an_untrusted_certificate_is_refused(tls_backend: int) -> None:
    config = base_config(f"https://localhost:{tls_backend}")
    with WATCH.start_proxy(config) as proxy:
        try:
            urllib.request.urlopen(f"{proxy.url}/whoami", timeout=10)
        except urllib.error.HTTPError as error:
            assert error.code == 502
            assert json.loads(error.read()) == {"error": "upstream_unreachable"}
        else:
            pytest.fail("a certificate nobody trusts was accepted")
