"""Resource usage of an execution, as openEO's ``usage`` object (``{name: {"value", "unit"}}``), in one place.

The engine adds what only it knows (pixels written, the Dask workers' CPU time), an execution worker its own
process's CPU time and peak memory, and the job runner the wall time; each adds only what is not there yet.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any


def entry(value: float, unit: str, digits: int = 2) -> dict[str, Any]:
    """One usage metric."""
    return {"value": round(float(value), digits), "unit": unit}


def process_cpu_seconds() -> float:
    """User + system CPU seconds of the calling process so far (also run on Dask workers)."""
    times = os.times()
    return times.user + times.system


@dataclass
class UsageMeter:
    """CPU time, wall time and peak memory of this process since the meter was made."""

    cpu0: float = field(default_factory=process_cpu_seconds)
    wall0: float = field(default_factory=time.monotonic)

    def cpu(self) -> dict[str, Any]:
        return entry(process_cpu_seconds() - self.cpu0, "cpu-seconds")

    def duration(self) -> dict[str, Any]:
        return entry(time.monotonic() - self.wall0, "seconds")

    @staticmethod
    def memory() -> dict[str, Any]:
        """Peak resident memory of the process (Linux reports KiB)."""
        return entry(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "mb-peak", digits=1)

    def add_to(self, usage: dict[str, Any], *names: str) -> dict[str, Any]:
        """``usage`` with this meter's ``names`` (cpu, duration, memory) where they are missing."""
        for name in names:
            if name not in usage:
                usage[name] = getattr(self, name)()
        return usage
