"""session-sidecar: large, tamper-proof client-side sessions for any backend."""

__version__ = "0.1.0"
