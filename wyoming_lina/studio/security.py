"""Who may drive the studio: decisions as pure functions, tested without a server.

The studio changes what the household hears, so a web page that happens to be open in the
user's browser must not be able to drive it (cross-site request forgery): a request that
changes something (POST, PUT, DELETE) and comes from a browser carries an ``Origin``, which
must be the studio's own host (or the host a reverse proxy says it forwarded, as Home
Assistant's ingress does). A request without ``Origin`` is not from a browser page (curl, an
automation): the optional bearer token is what guards against those.
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_INGRESS_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def _host_port(netloc: str, default_port: int | None) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(f"//{netloc.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else default_port


def origin_allowed(origin: str | None, host: str | None, forwarded_hosts: str | None = None) -> bool:
    """May a state-changing request with this ``Origin`` header act on the studio at ``host``?"""
    if origin is None:
        return True  # not sent by a web page
    try:
        parsed = urlsplit(origin.strip())
        origin_port = parsed.port
    except ValueError:
        return False
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.hostname:
        return False  # "null" (sandboxed frames, files) and anything odd
    default = _DEFAULT_PORTS[parsed.scheme]
    wanted = (parsed.hostname.lower(), origin_port if origin_port is not None else default)
    candidates = [host or ""] + [h for h in (forwarded_hosts or "").split(",") if h.strip()]
    return any(_host_port(candidate, default) == wanted for candidate in candidates)


def bearer_allowed(authorization: str | None, token: str | None) -> bool:
    """With a token configured, the request must carry ``Authorization: Bearer <token>``."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def ingress_base(path: str | None) -> str | None:
    """The page's base URL under Home Assistant ingress (``X-Ingress-Path``), if it is a sane path."""
    if not path or not _INGRESS_PATH.fullmatch(path) or "//" in path or "/../" in f"{path}/":
        return None
    return path.rstrip("/") + "/"
