"""Everything the proxy derives from one configuration, built once and swapped whole on reload.

A request reads ``server.state`` once at its start, so it sees one consistent configuration
even if a SIGHUP lands while it is in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Config
from proxy.http_headers import HeaderPolicy
from proxy.routing import Router
from proxy.session_codec import SessionCodec
from proxy.session_exchange import SessionExchange


def codec_from_config(config: Config) -> SessionCodec:
    """The one place a :class:`SessionCodec` is built from configuration."""
    return SessionCodec(
        [s.value for s in config.secrets],
        name=config.cookie.name,
        chunk_size=config.cookie.chunk_size,
        max_chunks=config.cookie.max_chunks,
        max_age=config.cookie.max_age,
        encrypt=config.session.encrypt,
        compress=config.session.compress,
        max_json_bytes=config.session.max_json_bytes,
    )


@dataclass(frozen=True, slots=True)
class ProxyState:
    config: Config
    router: Router
    headers: HeaderPolicy
    exchange: SessionExchange

    @classmethod
    def build(cls, config: Config, codec: SessionCodec) -> ProxyState:
        return cls(
            config=config,
            router=Router(config.upstreams),
            headers=HeaderPolicy(config),
            exchange=SessionExchange(config, codec),
        )
