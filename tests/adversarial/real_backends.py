"""Real HTTP servers on 127.0.0.1 that echo what they parsed, for the smuggling corpus.

gunicorn (sync worker, WSGI), uvicorn (h11, ASGI), Node ``http`` and Go ``net/http`` each
answer every request with JSON ``{"target", "method", "id", "status", "session", "owned"}``:
its X-Session-Status, its X-Session and the names of the owned headers (folded spelling) that
arrived beside them. Each also prints ``SEEN <target>`` for every request it parsed and
``REJECT`` for bytes its parser refused, so a test can compare what a backend parsed with what
the client got back. Go is built once per test session (stdlib only, offline).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Final, Literal

from tests.integration.backends import REPO_ROOT, RunningBackend, free_port
from tests.integration.processes import ManagedProcess, scratch_dir

RealKind = Literal["gunicorn", "uvicorn", "node", "go"]
REAL_KINDS: Final[tuple[RealKind, ...]] = ("gunicorn", "uvicorn", "node", "go")
_OWNED: Final = frozenset({"xsession", "xsessionstatus", "xsetsession", "xpatchsession"})
_WORK: Final = scratch_dir("sidecar-real-backends-")


def _echo(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    folded = [(re.sub(r"[^0-9a-z]", "", n.lower()), n, v) for n, v in headers]
    query = target.partition("?")[2]
    ident = next((p[3:] for p in query.split("&") if p.startswith("id=")), None)
    return json.dumps(
        {
            "target": target,
            "method": method,
            "id": ident,
            "status": [v for f, _, v in folded if f == "xsessionstatus"],
            "session": [v for f, _, v in folded if f == "xsession"],
            "owned": [n for f, n, _ in folded if f in _OWNED],
        }
    ).encode()


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    target = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
    headers = [
        (k[5:].replace("_", "-"), str(v)) for k, v in environ.items() if k.startswith("HTTP_")
    ]
    print("SEEN", target, flush=True)
    body = _echo(environ["REQUEST_METHOD"], target, headers)
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    target = scope["raw_path"].decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
    print("SEEN", target, flush=True)
    while (await receive()).get("more_body"):
        pass
    body = _echo(scope["method"], target, headers)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


NODE_SOURCE: Final = r"""
const http = require('http');
const OWNED = new Set(['xsession', 'xsessionstatus', 'xsetsession', 'xpatchsession']);
const server = http.createServer((req, res) => {
  console.log('SEEN ' + req.url);
  const pairs = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i], raw[i + 1]]);
  const fold = (n) => n.toLowerCase().replace(/[^0-9a-z]/g, '');
  const id = new URL(req.url, 'http://x').searchParams.get('id');
  const body = JSON.stringify({
    target: req.url, method: req.method, id,
    status: pairs.filter(([n]) => fold(n) === 'xsessionstatus').map(([, v]) => v),
    session: pairs.filter(([n]) => fold(n) === 'xsession').map(([, v]) => v),
    owned: pairs.filter(([n]) => OWNED.has(fold(n))).map(([n]) => n),
  });
  req.resume();
  req.on('end', () => { res.setHeader('Content-Type', 'application/json'); res.end(body); });
});
server.on('clientError', (err, socket) => { console.log('REJECT ' + err.code); socket.destroy(); });
server.listen(Number(process.env.PORT), '127.0.0.1');
"""

GO_SOURCE: Final = r"""
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
)

var nonAlnum = regexp.MustCompile("[^0-9a-z]")

func main() {
	owned := map[string]bool{
		"xsession": true, "xsessionstatus": true, "xsetsession": true, "xpatchsession": true,
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("SEEN " + r.RequestURI)
		io.Copy(io.Discard, r.Body)
		out := map[string]any{
			"target": r.RequestURI, "method": r.Method, "id": r.URL.Query().Get("id"),
			"status": []string{}, "session": []string{}, "owned": []string{}}
		for name, values := range r.Header {
			f := nonAlnum.ReplaceAllString(strings.ToLower(name), "")
			for _, v := range values {
				if f == "xsessionstatus" {
					out["status"] = append(out["status"].([]string), v)
				}
				if f == "xsession" {
					out["session"] = append(out["session"].([]string), v)
				}
				if owned[f] {
					out["owned"] = append(out["owned"].([]string), name)
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
"""


class RealBackend(ManagedProcess):
    def __init__(self, kind: RealKind, port: int, process: subprocess.Popen[bytes], log: Path):
        super().__init__(process, log)
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def seen(self) -> list[str]:
        """Every target this backend parsed so far, in order."""
        return [line[5:] for line in self.output().splitlines() if line.startswith("SEEN ")]

    def rejected(self) -> list[str]:
        """Lines where the backend's own parser refused bytes."""
        marks = ("REJECT", "Invalid request", "Invalid HTTP request")
        return [
            line
            for line in self.output().splitlines()
            if line.startswith(marks) or any(m in line for m in marks[1:])
        ]


def _go_binary() -> Path:
    binary = _WORK / "echo-go"
    if not binary.exists():
        source = _WORK / "go-src"
        source.mkdir(exist_ok=True)
        (source / "main.go").write_text(GO_SOURCE)
        (source / "go.mod").write_text("module echo\n\ngo 1.21\n")
        env = {
            **os.environ,
            "GOCACHE": str(_WORK / "gocache"),
            "GOPATH": str(_WORK / "gopath"),
            "GOPROXY": "off",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "",
        }
        subprocess.run(
            ["go", "build", "-o", str(binary), "."],
            cwd=source,
            env=env,
            check=True,
            capture_output=True,
        )
    return binary


def _command(kind: RealKind, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if kind == "gunicorn":
        return [
            str(bin_dir / "gunicorn"),
            "-w",
            "1",
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "info",
            "--no-control-socket",  # gunicorn 27: else one socket under ~/.gunicorn for all
            "tests.adversarial.real_backends:wsgi_app",
        ]
    if kind == "uvicorn":
        return [
            str(bin_dir / "uvicorn"),
            "--http",
            "h11",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "tests.adversarial.real_backends:asgi_app",
        ]
    if kind == "node":
        script = _WORK / "echo.js"
        script.write_text(NODE_SOURCE)
        return ["node", str(script)]
    return [str(_go_binary())]


def start_real_backend(kind: RealKind) -> RealBackend:
    """Start ``kind`` on a free port and return once it accepts connections (20 s at most)."""
    port = free_port()
    log = _WORK / f"{kind}-{port}.log"
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            _command(kind, port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    backend = RealBackend(kind, port, process, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited at start:\n{backend.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return backend
        except OSError:
            time.sleep(0.05)
    backend.stop()
    raise RuntimeError(f"{kind} did not listen within 20 s:\n{backend.output()}")


def parsed_by(backend: RunningBackend) -> list[dict[str, Any]]:
    """What the hostile Node backend (tests/adversarial/hostile_backend.js) parsed since the
    last call."""
    with urllib.request.urlopen(f"{backend.url}/__requests", timeout=5) as response:
        seen: list[dict[str, Any]] = json.load(response)
    return seen
