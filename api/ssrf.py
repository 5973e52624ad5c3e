"""Safe webhook targets: a webhook URL is a request smsgw makes on a client's behalf (server-side request forgery).

A client must not be able to make smsgw call something only smsgw can reach: loopback, private networks,
link-local (cloud metadata at 169.254.169.254), multicast, reserved or otherwise not globally routable
addresses, nor the IPv4-mapped, NAT64 or 6to4 spellings of those. Two moments are checked:

- when an endpoint is created or its URL changed: ``check_url`` (its form, then every address its host resolves
  to; a refusal is a 422 with ``Refused.message``);
- at every delivery, because DNS may answer differently later (rebinding): the worker's session uses
  ``aiohttp.TCPConnector(resolver=CheckedResolver(allow_private))``. The resolver checks what it resolved and
  hands aiohttp exactly those addresses, so the connection goes to an address that was checked, with no second
  lookup in between. aiohttp wraps the ``Refused`` it raises (see ``refusal_in``).

aiohttp never asks a resolver about an IP literal (``https://10.0.0.5/`` connects straight away), so
``CheckedResolver`` alone does not cover literal hosts: the worker calls ``check_target(url, allow_private)``
before each request (it raises ``Refused("blocked_address")`` for a refused literal and does nothing for a name,
which the resolver checks). The worker's session must also not use a proxy (``trust_env`` stays False: through a
proxy the resolver would check the proxy's address, not the target's) and must not follow redirects.

Everything but ``resolve``, ``check_url`` and ``CheckedResolver.resolve`` is pure (the worker asks
``check_url_form`` and ``check_target`` once per URL and keeps the answer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
from yarl import URL

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 10.0  # seconds; a lookup that hangs must not hold an endpoint's creation open
ALLOW_HTTP_HINT = "set SMSGW_WEBHOOK_ALLOW_HTTP=1 to allow http://"
ALLOW_PRIVATE_HINT = "webhooks go to public addresses only (SMSGW_WEBHOOK_ALLOW_PRIVATE=1 allows others)"

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # what inet_aton would read as a number
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")        # carrier-grade NAT (RFC 6598): not private, not global
_NAT64 = ipaddress.ip_network("64:ff9b::/96")          # well-known NAT64 prefix: the IPv4 address is the last 32 bits
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): never global
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class Refused(OSError):
    """A webhook target smsgw will not call; ``code`` is for machines, ``message`` for the user.

    An ``OSError`` (and so an ``Exception``) on purpose: aiohttp turns an ``OSError`` raised by a resolver into
    ``ClientConnectorDNSError``, a connection error that never sent the request, so code that already handles
    "could not connect" handles a refusal too, and ``refusal_in`` finds it as that error's ``os_error``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.strerror = message  # what aiohttp's ClientConnectorError prints between brackets

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.code, self.message))


def check_url_form(url: str, *, allow_http: bool) -> None:
    """Raise ``Refused`` ("bad_url" or "insecure_scheme") unless ``url`` is a plain absolute http(s) URL.

    The URL is read by yarl, as aiohttp will read it to connect, and must read the same to urllib: a URL that
    parsers disagree on (backslashes, stray ``@``, percent-encoded hosts) is where filters get bypassed.
    """
    if not isinstance(url, str) or not url:
        raise Refused("bad_url", "the URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise Refused("bad_url", f"the URL must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in url):
        raise Refused("bad_url", "the URL must not contain spaces or control characters")
    if "\\" in url:
        raise Refused("bad_url", "the URL must not contain backslashes")
    try:
        parsed = URL(url)
        split = urlsplit(url)
        port = parsed.explicit_port
    except ValueError as exc:
        raise Refused("bad_url", f"not a valid URL: {exc}") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https") or not parsed.is_absolute() or not parsed.raw_host:
        raise Refused("bad_url", "the URL must be absolute and start with https:// (or http://)")
    if "@" in split.netloc:
        raise Refused("bad_url", "the URL must not carry a user or password (user:password@host)")
    if port is not None and not 1 <= port <= 65535:
        raise Refused("bad_url", "the URL's port must be between 1 and 65535")
    host = parsed.raw_host
    if not _same_host(split.hostname or "", host):
        raise Refused("bad_url", "the URL's host is ambiguous")
    _check_host_form(host)
    if scheme == "http" and not allow_http:
        raise Refused("insecure_scheme", f"https:// only: {ALLOW_HTTP_HINT}")


def _same_host(read: str, raw: str) -> bool:
    """Do urllib's reading of a host and yarl's (what aiohttp connects to) name one host? IP
    literals are compared as addresses (``0:0:0:0:0:0:0:1`` is ``::1``), names as IDNA."""
    read, raw = read.lower().rstrip("."), raw.lower().rstrip(".")
    if "%" in read + raw:  # an IPv6 zone names an interface of this host: never a webhook's target
        return False
    try:
        return ipaddress.ip_address(read) == ipaddress.ip_address(raw)
    except ValueError:
        pass
    try:
        return read.encode("idna").decode("ascii") == raw
    except UnicodeError:
        return False


def _check_host_form(host: str) -> None:
    """A host is an IP literal (IPv4 as four decimal numbers) or a DNS name of letters, digits, ``-`` and ``_``."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Refused("bad_url", f"{host!r} is not a valid IPv6 address") from None
        return
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise Refused("bad_url", f"{host!r} is not a valid host name")
    if _NUMERIC_LABEL.match(labels[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise Refused("bad_url", f"{host!r}: write an IPv4 address as four decimal numbers (a.b.c.d)") from None


def address_refusal(address: str) -> str | None:
    """Why smsgw will not connect to the IP ``address`` (e.g. "a private address"), or None if it may.

    An address that carries an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
    ``2002::/16``) is judged by that IPv4 address: it is where the packets end up.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local IPv6 may carry its zone: fe80::1%eth0
    except ValueError:
        return "not an IP address"
    if ip.version == 6:
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = address_refusal(str(inner))
            return None if why is None else f"{why} ({address} is {inner})"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in net for net in _PRIVATE if net.version == ip.version):
        return "a private address"
    if ip.version == 4 and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.version == 6 and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global or (ip.version == 6 and ip in _LOCAL_NAT64):
        return "an address that is not globally routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    return None


def check_literal(host: str) -> None:
    """Raise ``Refused("blocked_address")`` if ``host`` is an IP literal smsgw will not call; a name passes."""
    literal = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        return
    why = address_refusal(literal)
    if why is not None:
        raise Refused("blocked_address", f"{literal} is {why}; {ALLOW_PRIVATE_HINT}")


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the loop's getaddrinfo), in its order, each once.

    Raises ``Refused("unresolvable")`` when the name does not resolve, or not within ``RESOLVE_TIMEOUT``.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Refused("unresolvable", f"{host} did not resolve within {RESOLVE_TIMEOUT:g} s") from None
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise Refused("unresolvable", f"{host} could not be resolved: {reason}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Refused("unresolvable", f"{host} could not be resolved: no address")
    return addresses


async def check_url(url: str, *, allow_http: bool, allow_private: bool) -> list[str]:
    """Check ``url``'s form, resolve its host and check every address (all must pass unless ``allow_private``).

    Returns the addresses. An IP literal is checked as it is, without asking DNS.
    """
    check_url_form(url, allow_http=allow_http)
    parsed = URL(url)
    host = parsed.raw_host or ""
    if ":" in host or _is_ipv4(host):
        if not allow_private:
            check_literal(host)
        return [host]
    addresses = await resolve(host, parsed.port or (443 if parsed.scheme.lower() == "https" else 80))
    if not allow_private:
        _check_all(host, addresses)
    return addresses


def check_target(url: str, allow_private: bool) -> None:
    """What the worker calls before each request: refuse a literal IP host that ``CheckedResolver`` never sees.

    A name is left to the resolver (it is checked at connect time, on the very answer used to connect).
    Raises ``Refused("bad_url")`` for a URL without a host, ``Refused("blocked_address")`` for a refused literal.
    """
    try:
        host = URL(url).raw_host
    except ValueError:
        host = None
    if not host:
        raise Refused("bad_url", "the URL has no host")
    if not allow_private:
        check_literal(host)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _check_all(host: str, addresses: list[str]) -> None:
    for address in addresses:
        why = address_refusal(address)
        if why is not None:
            raise Refused("blocked_address", f"{host} resolves to {address}, {why}; {ALLOW_PRIVATE_HINT}")


class CheckedResolver(aiohttp.abc.AbstractResolver):
    """An aiohttp resolver that refuses a name resolving to any refused address (unless ``allow_private``).

    It returns the very results it checked: aiohttp connects to those (numeric, no second lookup), so a DNS
    answer cannot change between the check and the connection. aiohttp's DNS cache keeps only answers that
    passed, since a refusal is raised, never returned.
    """

    def __init__(self, allow_private: bool, resolver: aiohttp.abc.AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._resolver = resolver  # the default ThreadedResolver needs a running loop: made at first use

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[aiohttp.abc.ResolveResult]:
        if self._resolver is None:
            self._resolver = aiohttp.ThreadedResolver()
        results = await self._resolver.resolve(host, port, family=family)
        if not self.allow_private:
            _check_all(host, [str(result["host"]) for result in results])
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()


def refusal_in(exc: BaseException) -> Refused | None:
    """The ``Refused`` behind ``exc``, or None.

    aiohttp raises an ``OSError`` from a resolver as ``ClientConnectorDNSError(key, os_error)`` with the
    original as ``os_error`` and ``__cause__``; this also looks through ``__context__`` and exception groups.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, Refused):
            return current
        if isinstance(current, aiohttp.ClientConnectorError):
            pending.append(current.os_error)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend((current.__cause__, current.__context__))
    return None
