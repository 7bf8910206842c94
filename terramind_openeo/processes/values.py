"""Process arguments as JSON values: the one reading of numpy scalars and numbers for the fixed processes."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy scalars and 0-d arrays as Python values (``NaN`` stays a float; dates and durations stay numpy:
    ``datetime64[ns].item()`` would be an int); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic) and not isinstance(value, (np.datetime64, np.timedelta64)):
        value = value.item()
    return value


def is_number(value: Any) -> bool:
    """A number in the openEO sense: Python or numpy ints and floats, never a boolean."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
