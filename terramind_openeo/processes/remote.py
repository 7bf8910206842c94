"""Bytes from a user's URL (``load_url``, ``load_ml_model``), only through the back-end's URL rules.

Every URL goes through the one URL checker of the back-end before a connection is made (scheme, host,
resolved addresses, redirects: see docs/security.md); the body is read up to a byte limit, so a large or
endless answer cannot fill memory. Until that checker is wired here no URL is fetched at all.
"""

from __future__ import annotations

from terramind_openeo.processes.errors import ProcessParameterInvalid


def fetch_bytes(url: str, max_bytes: int, argument: str) -> bytes:
    """The body at ``url`` (at most ``max_bytes``), or an openEO error naming ``argument``."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ProcessParameterInvalid(f"{str(url)[:80]!r} is not an http(s) URL", argument=argument)
    raise ProcessParameterInvalid("loading data from URLs is not enabled on this back-end (the URL rules that "
                                  "guard it are not configured)", argument=argument)
