"""What every router needs, built once per app: settings, store, engine, authenticator, runner, signer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import anyio
from fastapi import Request

from .auth import Authenticator, User
from .engine import Engine
from .errors import OpenEOApiError
from .graphs import uses_process, validation_errors
from .runner import JobRunner
from .settings import Settings
from .store import Store
from .web import UrlSigner
from .weights import check_weights

log = logging.getLogger(__name__)

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

    def api_url(self, request: Request, path: str = "") -> str:
        """Absolute URL of an API path (``/jobs/x``), from ``public_url`` or the request's own base."""
        base = self.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
        return f"{base}{self.settings.api_prefix}{path}"

    async def user(self, request: Request) -> User:
        return await self.auth.user(request)

    def user_processes(self, owner: str) -> dict[str, dict]:
        return {spec["id"]: spec for spec in self.store.list_udps(owner)}

    def process_ids(self) -> set[str]:
        return {spec["id"] for spec in self.engine.process_specs()}

    def collection_ids(self) -> set[str]:
        return {c["id"] for c in self.engine.collections()}

    def check_graph(self, user: User, graph: dict) -> dict[str, dict]:
        """Reject before any work: unknown processes or collections, UDFs the user may not run, weights
        outside ``allowed_weights``. Returns the user's processes the check saw (to execute with)."""
        udps = self.user_processes(user.user_id)
        errors = validation_errors(graph, self.process_ids(), self.collection_ids(), udps)
        if errors:
            raise errors[0]
        if uses_process(graph, "run_udf", udps):
            self.auth.check_udf_allowed(user)
        check_weights(graph, self.settings.allowed_weights, udps)
        return udps

    def validate(self, user: User, graph) -> list[OpenEOApiError]:
        udps = self.user_processes(user.user_id)
        errors = validation_errors(graph, self.process_ids(), self.collection_ids(), udps)
        if not errors and isinstance(graph, dict) and uses_process(graph, "run_udf", udps):
            try:
                self.auth.check_udf_allowed(user)
            except OpenEOApiError as exc:
                errors.append(exc)
        if not errors and isinstance(graph, dict):
            try:
                check_weights(graph, self.settings.allowed_weights, udps)
            except OpenEOApiError as exc:
                errors.append(exc)
        return errors


def state_of(request: Request) -> BackendState:
    return request.app.state.backend
