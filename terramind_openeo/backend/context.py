"""What every router needs, built once per app: settings, store, engine, authenticator, runner, signer."""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import anyio
from fastapi import Request

from terramind_openeo.processes.resolve import stored_process_parameters
from terramind_openeo.processes.sandbox import Unavailable

from .auth import Authenticator, User
from .checks import check_nodes
from .engine import Engine
from .errors import OpenEOError, TooManyJobs
from .graphs import resolved_nodes, validation_errors
from .runner import JobRunner
from .settings import Settings, udf_sandbox, url_policy
from .store import Store
from .web import UrlSigner

log = logging.getLogger(__name__)

_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9a-fA-F:.]+\](:\d{1,5})?")
_SYNC_LOCK = threading.Lock()
API_VERSION = "1.2.0"
STAC_VERSION = "1.0.0"


@dataclass
class BackendState:
    settings: Settings
    store: Store
    engine: Engine
    auth: Authenticator
    runner: JobRunner
    signer: UrlSigner

    @cached_property
    def sync_limiter(self) -> anyio.CapacityLimiter:
        return anyio.CapacityLimiter(self.settings.max_sync_requests)

    @cached_property
    def _sync_counts(self) -> dict[str, int]:
        return {}

    @contextmanager
    def sync_slot(self, user_id: str):
        """One of the user's ``max_sync_requests_per_user`` synchronous requests; 429 when none is free."""
        with _SYNC_LOCK:
            running = self._sync_counts.get(user_id, 0)
            if running >= self.settings.max_sync_requests_per_user:
                raise TooManyJobs(f"You have {running} synchronous requests running; at most "
                                  f"{self.settings.max_sync_requests_per_user} at once. Wait for one to finish "
                                  "or use batch jobs.")
            self._sync_counts[user_id] = running + 1
        try:
            yield
        finally:
            with _SYNC_LOCK:
                self._sync_counts[user_id] -= 1
                if not self._sync_counts[user_id]:
                    del self._sync_counts[user_id]

    def api_url(self, request: Request, path: str = "") -> str:
        """Absolute URL of an API path (``/jobs/x``), from ``public_url``. Without it, the request's own base
        is used only when its ``Host`` names this server on a loopback address or its bind address; any
        other ``Host`` (a forged header) gets the bind address, never a link to a host the client chose."""
        base = self.settings.public_url.rstrip("/")
        if not base:
            host = (request.url.hostname or "").lower().strip("[]")
            trusted = {"localhost", "127.0.0.1", "::1", self.settings.host.lower().strip("[]")} - {"0.0.0.0", "::"}
            if host in trusted and _HOST_HEADER.fullmatch(request.headers.get("host", "")):
                base = str(request.base_url).rstrip("/")
            else:
                shown = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
                base = f"http://{shown}:{self.settings.port}"
        return f"{base}{self.settings.api_prefix}{path}"

    async def user(self, request: Request) -> User:
        return await self.auth.user(request)

    def user_processes(self, owner: str) -> dict[str, dict]:
        return {spec["id"]: spec for spec in self.store.list_udps(owner)}

    def process_ids(self) -> set[str]:
        return {spec["id"] for spec in self.engine.process_specs()}

    def collection_ids(self) -> set[str]:
        return {c["id"] for c in self.engine.collections()}

    def enforce(self, user_id: str, graph: dict, udps: dict[str, dict],
                parameters: dict | None = None) -> None:
        """The policy checks (UDF rights, weights, URLs, file names) on the graph as the engine resolves it;
        run at the door and again when a queued job starts."""
        nodes = resolved_nodes(graph, self.process_ids(), udps, parameters)
        check_nodes(nodes, allowed_weights=self.settings.allowed_weights, urls=url_policy(self.settings),
                    udf_allowed=lambda: self.check_udf_allowed(user_id))

    def check_udf_allowed(self, user_id: str) -> None:
        """UDF rights of the user, and a sandbox to run UDFs in (never without one)."""
        self.auth.check_udf_allowed(user_id)
        sandbox = udf_sandbox(self.settings)
        if isinstance(sandbox, Unavailable):
            raise OpenEOError(sandbox.message() + ".", code="UdfSandboxUnavailable", status=501)

    def check_graph(self, user: User, graph: dict) -> dict[str, dict]:
        """Reject before any work: unknown processes or collections, UDFs the user may not run, weights
        outside ``allowed_weights``, URLs and names users may not use. Returns the user's processes the
        check saw (to execute with)."""
        udps = self.user_processes(user.user_id)
        errors = validation_errors(graph, self.process_ids(), self.collection_ids(), udps)
        if errors:
            raise errors[0]
        self.enforce(user.user_id, graph, udps)
        return udps

    def check_stored_process(self, user: User, process_id: str, spec: dict) -> None:
        """A process about to be stored: checked now with its parameters' defaults (values that come with
        each call are checked then), as if the user ran it."""
        udps = {**self.user_processes(user.user_id), process_id: spec}
        self.enforce(user.user_id, spec["process_graph"], udps, stored_process_parameters(spec))

    def validate(self, user: User, graph) -> list[OpenEOError]:
        udps = self.user_processes(user.user_id)
        errors = validation_errors(graph, self.process_ids(), self.collection_ids(), udps)
        if not errors and isinstance(graph, dict):
            try:
                self.enforce(user.user_id, graph, udps)
            except OpenEOError as exc:
                errors.append(exc)
        return errors


def state_of(request: Request) -> BackendState:
    return request.app.state.backend
