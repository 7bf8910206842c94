"""Standard scalar processes (arithmetic, comparison, logic, math, text) with the openEO null and type
semantics that the openeo-processes-dask implementations lack.

Registered through ``FIXES`` (see ``registry.FIX_MODULES``); the standard specs are kept.
"""

from __future__ import annotations

# id -> "module:function"
FIXES: dict[str, str] = {}
