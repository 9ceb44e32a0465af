"""``python -m proxy`` is the same as the ``session-sidecar`` command."""

from proxy.cli import main

raise SystemExit(main())
