"""``create_app(settings)``: the openEO API 1.2 back-end as a FastAPI application."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .auth import Authenticator
from .context import BackendState
from .engine import Engine, ProcessesEngine
from .errors import install_error_handlers
from .isolation import IsolatedEngine
from .middleware import CorsMiddleware, NormalizePathMiddleware
from .routers.account import account_router
from .routers.catalog import catalog_router
from .routers.general import general_router
from .routers.jobs import jobs_router
from .routers.results import results_router
from .routers.user_processes import user_processes_router
from .runner import JobRunner, sweep_scratch
from .settings import Settings, load_settings
from .store import Store
from .web import UrlSigner

log = logging.getLogger(__name__)

ROUTERS = (general_router, account_router, catalog_router, user_processes_router, jobs_router, results_router)


def build_state(settings: Settings, engine: Engine | None = None) -> BackendState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_path)
    if engine is None:
        engine = IsolatedEngine(settings) if settings.isolation == "process" else ProcessesEngine(settings)
    state = BackendState(settings=settings, store=store, engine=engine, auth=Authenticator(settings, store),
                         runner=None, signer=UrlSigner(settings.data_dir / "signing.key"))  # type: ignore[arg-type]
    state.runner = JobRunner(settings, store, engine, state.user_processes, state.enforce)
    return state


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment); ``engine`` replaces the processes layer."""
    settings = settings or load_settings()
    state = build_state(settings, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        swept = sweep_scratch(settings)
        if swept:
            log.info("removed %d scratch or unpublished entries left by the previous server process", swept)
        state.runner.recover()
        if not settings.public_url and settings.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("public_url is not set: result and download links name %s:%d; set public_url to the "
                        "address clients use", settings.host, settings.port)
        if hasattr(state.engine, "warm_up"):
            state.engine.warm_up()
        log.info("openEO back-end ready: data in %s, API at %s", settings.data_dir, settings.api_prefix)
        try:
            yield
        finally:
            state.runner.close()
            state.engine.close()
            state.store.close()

    app = FastAPI(title=settings.title, description=settings.description, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = state
    install_error_handlers(app)
    app.state.routers = [factory(state) for factory in ROUTERS]
    for router in app.state.routers:
        app.include_router(router)
    app.add_middleware(CorsMiddleware)
    app.add_middleware(NormalizePathMiddleware)
    return app
