"""Small apps, one per real backend server, that the sidecar fronts in test_backend_servers.py.

Every app answers the same three routes, so one test drives them all:

* ``GET /whoami``: ``{"status": <X-Session-Status>, "session_raw": <X-Session as received>}``;
* ``GET /session/grow?kb=N``: ``X-Set-Session: {"blob":"xxx..."}`` with N * 1024 ``x``;
* ``GET /healthz``: ``ok``.
"""
