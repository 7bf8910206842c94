"""URLs and local paths that users pass (``load_stac``, ``weights``, any ``load_url``-like argument).

The one place that decides whether a user-given location may be read, and the one HTTP fetch that reads
it. Rules, in order (:func:`check_location`):

- a local path (no scheme, or ``file:``) is readable only inside a root the operator lists
  (``UrlPolicy.local_roots``), after resolving symbolic links and ``..``;
- otherwise the scheme is ``http`` or ``https``, there are no credentials in the URL, and the URL lies
  under one of ``UrlPolicy.allowed`` (``"https://"`` alone: any host; ``"https://host/dir/"``: that host,
  that path prefix);
- the host is resolved (``getaddrinfo``, so every spelling a resolver accepts - ``127.1``, ``0x7f000001``,
  ``2130706433``, ``[::ffff:127.0.0.1]`` ... - is judged by the address it means) and every address must
  be public: loopback, private, link-local, shared, reserved, multicast and unspecified addresses are
  refused, also inside IPv4-mapped, 6to4, Teredo and NAT64 IPv6 addresses, unless the URL lies under
  ``UrlPolicy.allowed_internal`` (internal servers the operator trusts).

:func:`fetch` connects to the very address that was checked (no second DNS answer in between), follows
redirects itself and checks each hop again, and reads at most ``max_bytes``. Every refusal says "not
allowed" in the same words whether or not the target exists; failures to read say "could not be read".

``UrlPolicy.trusted()`` (the default of library use and of ``terramind-openeo run``, where the user is the
operator) allows everything; the back-end always passes its own policy.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from terramind_openeo.processes.errors import ProcessParameterInvalid

MAX_URL_LENGTH = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALSO_INTERNAL = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "100.64.0.0/10", "198.18.0.0/15"))
Resolver = Callable[[str, int], list[str]]


class UrlNotAllowed(ProcessParameterInvalid):
    """A user-given URL or path that this back-end does not read."""


class UrlUnreadable(ProcessParameterInvalid):
    """An allowed URL that could not be read (connection, status, size)."""


@dataclass(frozen=True)
class UrlPolicy:
    """What user-given locations may be read; built by the back-end from its settings."""

    allowed: tuple[str, ...] = ("https://", "http://")
    """URL prefixes users may read: ``"https://"`` (any host), ``"https://host/"``, ``"https://host/dir/"``."""
    allowed_internal: tuple[str, ...] = ()
    """URL prefixes whose hosts may resolve to internal addresses (servers of the operator's own network)."""
    local_roots: tuple[str, ...] = ()
    """Absolute local directories users may read files from (nothing else on disk)."""
    max_redirects: int = 5
    timeout_s: float = 30.0
    max_bytes: int = 32 * 1024 * 1024
    """Largest document :func:`fetch` reads (STAC JSON, vector files), in bytes."""
    trusted_caller: bool = False
    """True for library and command-line use: no checks at all (the caller is the operator)."""

    @classmethod
    def trusted(cls) -> UrlPolicy:
        return cls(trusted_caller=True)


@dataclass(frozen=True)
class Location:
    """A checked location: a local path, or a URL with the addresses its host resolved to."""

    url: str
    local_path: str | None = None
    host: str = ""
    port: int = 0
    addresses: tuple[str, ...] = ()


def not_allowed(url: Any, why: str = "") -> UrlNotAllowed:
    shown = str(url)[:200]
    return UrlNotAllowed(f"reading {shown!r} is not allowed on this back-end" + (f" ({why})" if why else ""))


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def is_public_address(address: str) -> bool:
    """True for a global unicast address, judged also through the IPv4 address an IPv6 one embeds."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if "%" in address:  # a zone id: a link-local scope
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour]
        if ip.teredo:
            embedded += list(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(e is not None and not is_public_address(str(e)) for e in embedded):
            return False
        if ip.ipv4_mapped is not None:
            return True
    if any(ip in net for net in _ALSO_INTERNAL if net.version == ip.version):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_unspecified or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


def _prefix_matches(url_parts, prefix: str) -> bool:
    p = urlsplit(prefix)
    if p.scheme.lower() != url_parts.scheme.lower():
        return False
    if not p.netloc:  # "https://": any host
        return True
    if (p.hostname or "").lower().rstrip(".") != (url_parts.hostname or "").lower().rstrip("."):
        return False
    if (p.port or _DEFAULT_PORTS[p.scheme.lower()]) != (url_parts.port or _DEFAULT_PORTS[url_parts.scheme.lower()]):
        return False
    want = p.path or "/"
    have = url_parts.path or "/"
    return have == want or have.startswith(want if want.endswith("/") else want + "/")


def _local_path(url: str, policy: UrlPolicy) -> Location:
    path = urlsplit(url).path if url.lower().startswith("file:") else url
    path = unquote(path) if url.lower().startswith("file:") else path
    if not policy.local_roots or not os.path.isabs(path):
        raise not_allowed(url, "local paths are not readable by users")
    real = os.path.realpath(path)
    for root in policy.local_roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            return Location(url=url, local_path=real)
    raise not_allowed(url, "outside the directories users may read")


def check_location(url: Any, policy: UrlPolicy, resolver: Resolver = system_resolver) -> Location:
    """The location ``url`` names, when the policy allows reading it; else :class:`UrlNotAllowed`."""
    if policy.trusted_caller:
        if isinstance(url, str) and "://" not in url:
            return Location(url=url, local_path=url)
        return Location(url=str(url))
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise not_allowed(url, "not a URL")
    if any(ord(c) < 33 or ord(c) == 127 for c in url) or "\\" in url:
        raise not_allowed(url, "control characters, spaces or backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") and not url.startswith("//"):
        return _local_path(url, policy)
    if scheme not in ("http", "https"):
        raise not_allowed(url, "only http and https URLs")
    if "@" in parts.netloc:
        raise not_allowed(url, "credentials in URLs")
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise not_allowed(url, "malformed host or port") from None
    if not host:
        raise not_allowed(url, "no host")
    if any(seg in ("..", ".") for seg in unquote(parts.path).split("/")) or "%2f" in parts.path.lower():
        raise not_allowed(url, "dot segments or encoded slashes in the path")
    if not any(_prefix_matches(parts, prefix) for prefix in policy.allowed):
        raise not_allowed(url, "not under a URL prefix this back-end allows")
    try:
        addresses = tuple(resolver(host, port))
    except (OSError, UnicodeError, ValueError):
        raise not_allowed(url, "the host does not resolve to a public address") from None
    if not addresses:
        raise not_allowed(url, "the host does not resolve to a public address")
    internal_ok = any(_prefix_matches(parts, prefix) for prefix in policy.allowed_internal)
    if not internal_ok and not all(is_public_address(a) for a in addresses):
        raise not_allowed(url, "the host does not resolve to a public address")
    return Location(url=url, host=host, port=port, addresses=addresses)


def check_many(urls, policy: UrlPolicy, resolver: Resolver = system_resolver) -> None:
    """Check every URL of an iterable (asset hrefs before a reader such as GDAL opens them)."""
    seen: set[str] = set()
    for url in urls:
        key = str(url)
        if key not in seen:
            seen.add(key)
            check_location(url, policy, resolver)


def fetch(url: str, policy: UrlPolicy, *, method: str = "GET", params: Mapping[str, Any] | None = None,
          json: Any = None, headers: Mapping[str, str] | None = None,
          resolver: Resolver = system_resolver) -> bytes:
    """The body of ``url`` (local path inside an allowed root, or http(s)), every redirect hop checked."""
    import httpx

    for _ in range(policy.max_redirects + 1):
        where = check_location(url, policy, resolver)
        if where.local_path is not None:
            return _read_local(where.local_path, url, policy)
        if policy.trusted_caller:
            request_url, extensions, send_headers = url, {}, dict(headers or {})
        else:
            request_url, extensions, send_headers = _pinned(url, where, headers)
        try:
            with httpx.Client(timeout=policy.timeout_s, follow_redirects=False, trust_env=False) as client, \
                    client.stream(method, request_url, params=params, json=json, headers=send_headers,
                                  extensions=extensions) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        if method.upper() not in ("GET", "HEAD"):
                            method, json = "GET", None
                        params = None
                        continue
                    if resp.status_code >= 400:
                        raise UrlUnreadable(f"{url[:200]!r} could not be read (HTTP {resp.status_code})")
                    body = bytearray()
                    for chunk in resp.iter_bytes():
                        body += chunk
                        if len(body) > policy.max_bytes:
                            raise UrlUnreadable(f"{url[:200]!r} is larger than {policy.max_bytes} bytes")
                    return bytes(body)
        except httpx.HTTPError as exc:
            raise UrlUnreadable(f"{url[:200]!r} could not be read ({type(exc).__name__})") from None
    raise UrlUnreadable(f"{url[:200]!r} could not be read (more than {policy.max_redirects} redirects)")


def _pinned(url: str, where: Location, headers: Mapping[str, str] | None) -> tuple[str, dict, dict]:
    """The request URL with the checked address in place of the host name (no second DNS lookup), the
    ``Host`` header and the TLS server name of the original host."""
    parts = urlsplit(url)
    address = where.addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{where.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    send = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    default = _DEFAULT_PORTS[parts.scheme.lower()]
    send["Host"] = where.host if where.port == default else f"{where.host}:{where.port}"
    extensions = {"sni_hostname": where.host} if parts.scheme.lower() == "https" else {}
    return pinned, extensions, send


def _read_local(path: str, url: str, policy: UrlPolicy) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(policy.max_bytes + 1)
    except OSError:
        raise UrlUnreadable(f"{url[:200]!r} could not be read") from None
    if len(data) > policy.max_bytes:
        raise UrlUnreadable(f"{url[:200]!r} is larger than {policy.max_bytes} bytes")
    return data
