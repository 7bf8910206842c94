"""The state of one process-graph execution, visible to the process implementations.

Process implementations are plain functions named and parameterised as their openEO specs; what they
need beyond their arguments (the catalog, where results go, the job's logger, the Dask scheduler) is
the current ``ExecutionContext``, set by ``execute_process_graph`` for the duration of one run.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CURRENT: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar("tmo_exec", default=None)


@dataclass
class SaveRequest:
    """A ``save_result`` call, written once the graph is evaluated (or per tile by ``run``)."""

    data: Any
    format: str
    options: dict
    node: str | None = None


@dataclass
class ExecutionContext:
    catalog: Any
    output_dir: Path | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("terramind_openeo.job"))
    scheduler: Any = None  # None: dask's default (threads); else a distributed.Client
    cancel: Callable[[], bool] | None = None
    progress: Callable[[float], None] | None = None
    chunk_size: int = 512
    saves: list[SaveRequest] = field(default_factory=list)
    # UDF messages of this run travel under this name (also from Dask workers, see udf.forward_udf_logs)
    log_channel: str = field(default_factory=lambda: uuid.uuid4().hex)
    udf_used: bool = False
    policy: Any = None  # policy.Policy of this run (what the user may read, where UDFs run); None: trusted
    # job id -> results directory of each finished batch job of the user (load_ml_model); set by the
    # back-end, None where there are no jobs (the run command)
    job_results: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.policy is None:
            from terramind_openeo.processes.policy import Policy

            self.policy = Policy.trusted_local()

    def check_size(self, value: Any, node: str | None = None) -> None:
        """Refuse a cube larger than the policy's ``max_pixels`` (judged on its lazy shape, before any pixel
        is computed)."""
        limit = getattr(self.policy, "max_pixels", None)
        size = getattr(value, "size", None)
        if limit is None or not isinstance(size, int) or not hasattr(value, "dims") or size <= limit:
            return
        from terramind_openeo.processes.errors import TooLargeForSynchronousProcessing

        raise TooLargeForSynchronousProcessing(f"this request handles a cube of {size:,} values ({dict(value.sizes)}), more than the "
                              f"{limit:,} a synchronous request may; run it as a batch job (POST /jobs, then "
                              "POST /jobs/{id}/results) or reduce the extent", node=node)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            from terramind_openeo.processes.errors import JobCanceled

            raise JobCanceled("the job was canceled")


def current() -> ExecutionContext:
    ctx = _CURRENT.get()
    if ctx is None:
        from terramind_openeo.processes.catalog import Catalog

        ctx = ExecutionContext(catalog=Catalog.default())
        _CURRENT.set(ctx)
    return ctx


def activate(ctx: ExecutionContext) -> contextvars.Token:
    return _CURRENT.set(ctx)


def deactivate(token: contextvars.Token) -> None:
    _CURRENT.reset(token)
