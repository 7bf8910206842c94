"""Standard array processes (array_*, reducers, first/last, sort, quantiles ...) with the openEO semantics
for null, empty arrays and non-numeric elements that the openeo-processes-dask implementations lack.

Registered through ``FIXES`` (see ``registry.FIX_MODULES``); the standard specs are kept.
"""

from __future__ import annotations

# id -> "module:function"
FIXES: dict[str, str] = {}
