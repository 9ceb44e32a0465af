"""A browser-like client for a topology inside a network namespace, standard library only.

Run it inside the namespace (``ip netns exec NAME python netns_client.py``), so that the
namespace's own ``/etc/hosts`` and loopback are the ones it uses. It reads a JSON list of
requests on stdin, sends them in order with one cookie jar, as one browser would, and prints a
JSON list of replies on stdout. A request is ``{"method", "url"}`` with optional ``"headers"``
and ``"json"`` (sent as the body); a reply is ``{"status", "headers", "body"}``, where
``headers`` is a list of ``[name, value]`` pairs in the order received. An HTTP error status is
a reply; a failure to connect ends the script with a traceback and exit code 1.
"""

import http.cookiejar
import json
import sys
import urllib.error
import urllib.request
from typing import Any

TIMEOUT = 10.0


def send_all(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    replies = []
    for spec in requests:
        headers = dict(spec.get("headers", {}))
        body = None
        if "json" in spec:
            body = json.dumps(spec["json"]).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(spec["url"], body, headers, method=spec["method"])
        try:
            with opener.open(request, timeout=TIMEOUT) as response:
                status, received, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, received, content = error.code, error.headers, error.read()
        replies.append(
            {
                "status": status,
                "headers": [[name, value] for name, value in received.items()],
                "body": content.decode("utf-8", errors="replace"),
            }
        )
    return replies


def main() -> None:
    json.dump(send_all(json.load(sys.stdin)), sys.stdout)


if __name__ == "__main__":
    main()
