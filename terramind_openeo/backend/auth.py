"""Authentication: HTTP basic -> bearer tokens ``basic//TOKEN``, OIDC access tokens ``oidc/<provider>/TOKEN``.

Passwords are stored as scrypt hashes (``scrypt$n$r$p$salt$hash``, stdlib only). OIDC tokens are checked at
the provider's userinfo endpoint (found by discovery) and the answer is cached for ``oidc_cache_ttl_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import shutil
import time
from dataclasses import dataclass

import httpx
from fastapi import Request

from .errors import (
    AuthenticationRequired,
    AuthenticationSchemeInvalid,
    CredentialsInvalid,
    PermissionsInsufficient,
    TokenInvalid,
)
from .settings import OidcProviderConfig, Settings
from .store import Store
from .throttle import LoginThrottle
from .users import UsersFile

log = logging.getLogger(__name__)

_SUB_KEEP = re.compile(r"[A-Za-z0-9.\-]")  # openEO user_id: ^[\w\-\.~]+$ ("~" separates provider and sub)


def oidc_user_id(provider_id: str, sub: str) -> str:
    """``provider~sub`` with every character of ``sub`` outside ``[A-Za-z0-9.-]`` written as ``_XX`` (its
    UTF-8 bytes in hex; ``_`` itself is ``_5f``): reversible, so two different subjects never share an id."""
    encoded = "".join(c if _SUB_KEEP.fullmatch(c) else "".join(f"_{b:02x}" for b in c.encode()) for c in sub)
    return f"{provider_id}~{encoded}"
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}${salt}${hash}".format(
        **_SCRYPT, salt=base64.b64encode(salt).decode(), hash=base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                  dklen=len(base64.b64decode(digest)))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass(frozen=True)
class User:
    """An authenticated caller; ``user_id`` owns jobs, logs and processes."""

    user_id: str
    name: str
    method: str  # "basic" or "oidc"


class OidcVerifier:
    """Checks access tokens at the provider's userinfo endpoint; caches answers (good and bad) briefly."""

    def __init__(self, providers: tuple[OidcProviderConfig, ...], cache_ttl_s: float, timeout_s: float = 10.0):
        self.providers = {p.id: p for p in providers}
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self._userinfo_urls: dict[str, str] = {}
        self._cache: dict[tuple[str, str], tuple[float, dict | None]] = {}
        self._lock = asyncio.Lock()

    async def _userinfo_url(self, client: httpx.AsyncClient, provider: OidcProviderConfig) -> str:
        if provider.id not in self._userinfo_urls:
            resp = await client.get(provider.issuer + "/.well-known/openid-configuration")
            resp.raise_for_status()
            self._userinfo_urls[provider.id] = resp.json()["userinfo_endpoint"]
        return self._userinfo_urls[provider.id]

    async def verify(self, provider_id: str, access_token: str) -> User:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise AuthenticationSchemeInvalid(f"Unknown OIDC provider {provider_id!r}.")
        key = (provider_id, hashlib.sha256(access_token.encode()).hexdigest())
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is None or cached[0] < now:
            claims = await self._fetch_claims(provider, access_token)
            self._cache[key] = (now + self.cache_ttl_s, claims)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] >= now}
        else:
            claims = cached[1]
        if not claims or not claims.get("sub"):
            raise TokenInvalid()
        sub = str(claims["sub"])
        return User(user_id=oidc_user_id(provider_id, sub),
                    name=str(claims.get("name") or claims.get("preferred_username") or sub), method="oidc")

    async def _fetch_claims(self, provider: OidcProviderConfig, access_token: str) -> dict | None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                url = await self._userinfo_url(client, provider)
                resp = await client.get(url, headers={"Authorization": f"Bearer {access_token}"})
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("OIDC provider %s unreachable: %s", provider.id, exc)
            raise TokenInvalid(f"Could not verify the token with OIDC provider {provider.id!r}.") from None
        if resp.status_code != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None


class Authenticator:
    """Resolves the ``Authorization`` header of a request into a :class:`User`."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.oidc = OidcVerifier(settings.oidc_providers, settings.oidc_cache_ttl_s)
        self.throttle = LoginThrottle(settings.login_max_failures_per_user, settings.login_max_failures_per_client,
                                      settings.login_window_s)
        # checked against when the user name is unknown: a login takes as long whether the name exists or not
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self.users_file = UsersFile(settings.users_path)

    def login_basic(self, header: str | None, client: str = "") -> str:
        """``GET /credentials/basic``: check ``Basic`` credentials, issue and store a bearer token.

        Unknown names cost one scrypt like known ones (no timing difference); failures are throttled per
        user name and per client address (429 with ``Retry-After``)."""
        if not header or not header.lower().startswith("basic "):
            raise AuthenticationRequired("Send HTTP basic credentials (Authorization: Basic ...).")
        try:
            name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsInvalid("Malformed basic credentials.") from None
        self.throttle.check(name, client)
        stored = self.settings.basic_users.get(name) or self.users_file.get(name)
        valid = verify_password(password, stored if stored is not None else self._dummy_hash)
        if stored is None or not valid:
            self.throttle.failed(name, client)
            raise CredentialsInvalid()
        token = secrets.token_urlsafe(32)
        self.store.add_token(token, owner=name, name=name, ttl_s=self.settings.token_ttl_s)
        return token

    def _basic_user_exists(self, name: str) -> bool:
        """The name is a basic-auth user now: in the ``basic_users`` setting or in the users file."""
        return name in self.settings.basic_users or self.users_file.get(name) is not None

    async def user(self, request: Request) -> User:
        header = request.headers.get("authorization")
        if not header:
            raise AuthenticationRequired()
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            raise AuthenticationSchemeInvalid("Use 'Authorization: Bearer basic//TOKEN' or 'Bearer oidc/PROVIDER/TOKEN'.")
        method, _, rest = credentials.strip().partition("/")
        if method == "basic":
            _, _, token = rest.partition("/")
            found = self.store.token_owner(token) if token else None
            if found is None or not self._basic_user_exists(found[0]):  # expired, revoked, user removed
                raise TokenInvalid()
            return User(user_id=found[0], name=found[1], method="basic")
        if method == "oidc":
            provider_id, _, token = rest.partition("/")
            if not token:
                raise TokenInvalid()
            return await self.oidc.verify(provider_id, token)
        raise AuthenticationSchemeInvalid(f"Unknown authentication method {method!r}.")

    def check_udf_allowed(self, user: User | str) -> None:
        user_id = user if isinstance(user, str) else user.user_id
        policy = self.settings.udf_policy
        if policy == "authenticated":
            return
        if policy == "users" and user_id in self.settings.udf_users:
            return
        hint = "" if shutil.which("bwrap") else (" They need the sandbox tool bubblewrap, which is not installed on "
                                                  "this server (Debian/Ubuntu package 'bubblewrap').")
        raise PermissionsInsufficient("User-defined functions (run_udf) are not enabled for this user "
                                      f"(udf_policy={policy!r})." + hint)
