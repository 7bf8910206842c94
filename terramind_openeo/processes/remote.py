"""Bytes from a location a user names (``load_url``, ``load_ml_model``), through the back-end's URL rules.

Every location goes through ``processes.urls`` (the one checker and fetch: scheme, allow-list, resolved
addresses, every redirect, a byte bound) with the run's policy (``context.current().policy.urls``); this
adds the caller's own, smaller byte limit and names the argument in the error.
"""

from __future__ import annotations

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import OpenEOError, ProcessParameterInvalid


def fetch_bytes(url: str, max_bytes: int, argument: str) -> bytes:
    """The body at ``url`` (at most ``max_bytes``), or an openEO error naming ``argument``."""
    from terramind_openeo.processes.urls import fetch

    if not isinstance(url, str) or not url:
        raise ProcessParameterInvalid("must be a URL", argument=argument)
    try:
        body = fetch(url, _ctx.current().policy.urls)
    except OpenEOError as exc:
        if exc.argument is None:  # locate() then names node and argument
            exc.argument = argument
        raise
    if len(body) > max_bytes:
        raise ProcessParameterInvalid(f"{url[:200]!r} is larger than {max_bytes} bytes", argument=argument)
    return body
