"""How one `cbir serve` process is exposed and bounded (the CLI's options, validated)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cbir.serve.limits import MAX_BODY_BYTES
from cbir.serve.security import allowed_hosts, check_exposure


class ServeConfig(BaseModel):
    """Security and resource settings of the app. The defaults suit in-process use
    (tests, `create_app` in a notebook): no token and no Host check; `cbir serve` always
    builds one with `for_host`, which checks the Host header."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str | None = Field(None, description="Access token (None: none needed).")
    allowed_hosts: list[str] | None = Field(
        None, description="Host header names answered (None: no check)."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed cross-origin (empty: CORS off)."
    )
    pixel_threads: int = Field(8, ge=1, le=256, description="Threads for tiles and regions.")
    search_threads: int = Field(2, ge=1, le=64, description="Threads decoding and searching.")
    tile_cache_bytes: int = Field(32 << 20, ge=0, description="Encoded Deep Zoom tiles.")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, description="Any request body.")
    log_requests: bool = Field(True, description="One line per request on cbir.serve.access.")

    @classmethod
    def for_host(
        cls,
        host: str,
        token: str | None = None,
        extra_hosts: list[str] | None = None,
        cors_origins: list[str] | None = None,
    ) -> ServeConfig:
        """The settings for listening on `host`: a token is required unless it is loopback
        (CbirError otherwise); Host headers are checked against loopback names, `host` and
        `extra_hosts`."""
        check_exposure(host, token)
        return cls(
            token=token or None,
            allowed_hosts=allowed_hosts(host, list(extra_hosts or [])),
            cors_origins=list(cors_origins or []),
        )
