"""``/credentials/basic``, ``/credentials/oidc`` and ``/me``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..auth import User
from ..context import BackendState
from .general import TAG


def account_router(state: BackendState) -> APIRouter:
    prefix = state.settings.api_prefix
    router = APIRouter(prefix=prefix, tags=[TAG])

    if state.settings.basic_users or state.settings.users_path.is_file():
        @router.get("/credentials/basic")
        def credentials_basic(request: Request) -> dict:
            client = request.client.host if request.client else ""
            return {"access_token": state.auth.login_basic(request.headers.get("authorization"), client)}

    if state.settings.oidc_providers:
        @router.get("/credentials/oidc")
        def credentials_oidc() -> dict:
            providers = []
            for p in state.settings.oidc_providers:
                entry: dict[str, Any] = {"id": p.id, "issuer": p.issuer, "title": p.title, "scopes": list(p.scopes)}
                if p.default_clients:
                    entry["default_clients"] = list(p.default_clients)
                providers.append(entry)
            return {"providers": providers}

    @router.get("/me")
    def me(request: Request, user: User = Depends(state.user)) -> dict:
        return {"user_id": user.user_id, "name": user.name,
                "links": [{"rel": "related", "href": state.api_url(request, "/jobs"), "title": "Batch jobs"}]}

    return router
