"""Safe webhook targets (api.ssrf): which addresses are refused, which URLs, and that a connection goes to
the address that was checked — over real loopback sockets, with fake resolvers standing in for DNS
(this machine has no network beyond loopback, so no real public name is resolved here)."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

import aiohttp
import aiohttp.abc
import pytest
from aiohttp import web

from api import ssrf

REFUSED = [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("fc00::1", "private"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "shared"),
    ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::7f00:1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"), ("2002:a01:203::1", "private"), ("ff02::1", "multicast"),
    ("fec0::1", "site-local"), ("2001:db8::1", "not globally routable"), ("255.255.255.255", "reserved"),
    ("fe80::1%eth0", "link-local"), ("::", "unspecified"), ("not-an-ip", "not an IP address"),
]
ALLOWED = ["8.8.8.8", "2606:4700:4700::1111", "1.1.1.1", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address,why", REFUSED)
def test_internal_addresses_are_refused_and_say_why(address, why):
    assert why in ssrf.address_refusal(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address):
    assert ssrf.address_refusal(address) is None


def refused(call) -> ssrf.Refused:
    with pytest.raises(ssrf.Refused) as caught:
        call()
    return caught.value


def test_http_needs_the_flag():
    error = refused(lambda: ssrf.check_url_form("http://hooks.example.com/x", allow_http=False))
    assert error.code == "insecure_scheme"
    assert "SMSGW_WEBHOOK_ALLOW_HTTP=1" in error.message
    ssrf.check_url_form("http://hooks.example.com/x", allow_http=True)
    ssrf.check_url_form("https://hooks.example.com:8443/events?app=1", allow_http=False)


@pytest.mark.parametrize("url", [
    "https://user:pass@hooks.example.com/x", "https://user@hooks.example.com/", "https://@hooks.example.com/",
])
def test_userinfo_is_refused(url):
    error = refused(lambda: ssrf.check_url_form(url, allow_http=True))
    assert (error.code, "user or password" in error.message) == ("bad_url", True)


@pytest.mark.parametrize("url", [
    "", "not a url", "hooks.example.com/x", "https://", "https:///x", "ftp://hooks.example.com/", "javascript:alert(1)",
    "https://hooks.example.com:0/", "https://hooks.example.com:70000/", "https://hooks.example.com:port/",
    "https://hooks .example.com/", "https://hooks.example.com/\r\nX: y", "https://hooks.example.com\\@10.0.0.1/",
    "https://%31%32%37.0.0.1/", "https://127.1/", "https://2130706433/", "https://0x7f000001/", "https://010.0.0.1/",
    "https://[::1/", "https://[fe80::1%25eth0]/", "https://" + "a" * 64 + ".example.com/",
    "https://hooks.example.com/" + "x" * 2048,
])
def test_garbage_is_a_bad_url(url):
    assert refused(lambda: ssrf.check_url_form(url, allow_http=True)).code == "bad_url"


def test_check_url_refuses_local_targets_unless_private_is_allowed():
    async def run():
        for url in ("https://localhost/x", "https://127.0.0.1/x", "https://[::1]/x"):
            with pytest.raises(ssrf.Refused) as caught:
                await ssrf.check_url(url, allow_http=False, allow_private=False)
            assert caught.value.code == "blocked_address"
            assert "loopback" in caught.value.message and "SMSGW_WEBHOOK_ALLOW_PRIVATE" in caught.value.message
        assert "127.0.0.1" in await ssrf.check_url("https://localhost/x", allow_http=False, allow_private=True)
        assert await ssrf.check_url("https://127.0.0.1/x", allow_http=False, allow_private=True) == ["127.0.0.1"]
        with pytest.raises(ssrf.Refused) as caught:  # the form is checked before anything is resolved
            await ssrf.check_url("http://localhost/x", allow_http=False, allow_private=True)
        assert caught.value.code == "insecure_scheme"
        with pytest.raises(ssrf.Refused) as caught:
            await ssrf.check_url("https://no-such-host.invalid/x", allow_http=False, allow_private=True)
        assert caught.value.code == "unresolvable" and "no-such-host.invalid" in caught.value.message
    asyncio.run(run())


def test_every_address_must_pass(monkeypatch):
    """A name with one public and one private address is refused: a connection may go to either."""
    async def both(host, port):
        return ["8.8.8.8", "10.0.0.5"]
    monkeypatch.setattr(ssrf, "resolve", both)
    with pytest.raises(ssrf.Refused) as caught:
        asyncio.run(ssrf.check_url("https://example.internal/x", allow_http=False, allow_private=False))
    assert caught.value.message.startswith("example.internal resolves to 10.0.0.5, a private address")


# --- over real sockets ---------------------------------------------------------------------------------------

@asynccontextmanager
async def receiver(host: str = "127.0.0.1"):
    """A tiny HTTP server answering its own name; ``hits`` counts the requests that reached it."""
    hits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text=f"answered by {host}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, hits
    finally:
        await runner.cleanup()


class FakeDns(aiohttp.abc.AbstractResolver):
    """Answers every name with the next of ``answers`` (the last one repeats), and counts the questions."""

    def __init__(self, *answers: tuple[str, int]):
        self.answers = list(answers)
        self.asked = 0

    async def resolve(self, host, port=0, family=socket.AF_INET):
        address, real_port = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return [{"hostname": host, "host": address, "port": real_port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}]

    async def close(self):
        pass


def session(resolver: ssrf.CheckedResolver, **connector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, force_close=True, **connector),
                                 timeout=aiohttp.ClientTimeout(total=30))


def test_checked_resolver_refuses_localhost_and_allows_it_when_private_is_allowed():
    async def run():
        async with receiver() as (port, hits):
            async with session(ssrf.CheckedResolver(allow_private=False)) as client:
                with pytest.raises(aiohttp.ClientError) as caught:  # what the worker catches as a failed attempt
                    await client.get(f"http://localhost:{port}/hook")
            refusal = ssrf.refusal_in(caught.value)
            assert refusal is not None and refusal.code == "blocked_address"
            assert isinstance(caught.value, aiohttp.ClientConnectorError)  # aiohttp wraps it: the request never left
            assert "loopback" in str(caught.value)
            assert hits == []
            async with session(ssrf.CheckedResolver(allow_private=True)) as client:
                async with client.get(f"http://localhost:{port}/hook") as reply:
                    assert (reply.status, await reply.text()) == (200, "answered by 127.0.0.1")
            assert hits == ["/hook"]
    asyncio.run(run())


def test_refusal_in_finds_nothing_in_other_failures():
    async def run():
        async with receiver() as (port, _):
            pass  # closed: nothing listens on the port any more
        async with session(ssrf.CheckedResolver(allow_private=True)) as client:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await client.get(f"http://localhost:{port}/")
        assert ssrf.refusal_in(caught.value) is None
    asyncio.run(run())
    assert ssrf.refusal_in(ValueError("x")) is None
    group = ExceptionGroup("attempts", [ValueError("x"), ssrf.Refused("blocked_address", "no")])
    assert ssrf.refusal_in(group).message == "no"


def test_a_name_always_answering_loopback_is_refused_on_every_request():
    """A refusal is raised, never cached: each request asks again and is refused again."""
    async def run():
        async with receiver() as (port, hits):
            dns = FakeDns(("127.0.0.1", port))
            async with session(ssrf.CheckedResolver(allow_private=False, resolver=dns)) as client:
                for _ in range(3):
                    with pytest.raises(aiohttp.ClientError) as caught:
                        await client.get(f"http://hooks.example.com:{port}/")
                    assert ssrf.refusal_in(caught.value).code == "blocked_address"
            assert (dns.asked, hits) == (3, [])
    asyncio.run(run())


def test_rebinding_the_connection_goes_to_the_address_checked_in_the_same_lookup(monkeypatch):
    """DNS answers a "public" address first and loopback next (127.0.0.2 plays the public one here, the only way to
    have one on a machine without network). Each request is one lookup, checked, and connected to as checked."""
    judge = ssrf.address_refusal
    monkeypatch.setattr(ssrf, "address_refusal", lambda address: None if address == "127.0.0.2" else judge(address))

    async def run():
        async with receiver("127.0.0.2") as (public_port, public_hits), receiver() as (local_port, local_hits):
            dns = FakeDns(("127.0.0.2", public_port), ("127.0.0.1", local_port))
            resolver = ssrf.CheckedResolver(allow_private=False, resolver=dns)
            async with session(resolver, use_dns_cache=False) as client:
                async with client.get(f"http://hooks.example.com:{public_port}/first") as reply:
                    assert await reply.text() == "answered by 127.0.0.2"
                assert dns.asked == 1  # one lookup: the connect did not resolve the name again
                with pytest.raises(aiohttp.ClientError) as caught:
                    await client.get(f"http://hooks.example.com:{public_port}/second")
                assert ssrf.refusal_in(caught.value).code == "blocked_address"
            assert (dns.asked, public_hits, local_hits) == (2, ["/first"], [])
    asyncio.run(run())


def test_a_checked_answer_is_the_one_connected_to_until_it_expires(monkeypatch):
    """With aiohttp's DNS cache (the default), the checked answer serves later requests: the rebinding answer
    is never even asked for while it lasts."""
    judge = ssrf.address_refusal
    monkeypatch.setattr(ssrf, "address_refusal", lambda address: None if address == "127.0.0.2" else judge(address))

    async def run():
        async with receiver("127.0.0.2") as (public_port, public_hits), receiver() as (local_port, local_hits):
            dns = FakeDns(("127.0.0.2", public_port), ("127.0.0.1", local_port))
            async with session(ssrf.CheckedResolver(allow_private=False, resolver=dns), ttl_dns_cache=300) as client:
                for path in ("/one", "/two", "/three"):
                    async with client.get(f"http://hooks.example.com:{public_port}{path}") as reply:
                        assert reply.status == 200
            assert (dns.asked, public_hits, local_hits) == (1, ["/one", "/two", "/three"], [])
    asyncio.run(run())


def test_aiohttp_skips_the_resolver_for_ip_literals_so_check_target_checks_them():
    """Why the worker calls check_target before each request: a literal host never reaches CheckedResolver."""
    async def run():
        async with receiver() as (port, hits):
            dns = FakeDns(("127.0.0.1", port))
            async with session(ssrf.CheckedResolver(allow_private=False, resolver=dns)) as client:
                async with client.get(f"http://127.0.0.1:{port}/literal") as reply:
                    assert reply.status == 200
            assert (dns.asked, hits) == (0, ["/literal"])
        for url in ("http://127.0.0.1:8080/", "https://[::1]/", "https://[::ffff:169.254.169.254]/",
                    "https://169.254.169.254/latest/meta-data/"):
            with pytest.raises(ssrf.Refused) as caught:
                ssrf.check_target(url, allow_private=False)
            assert caught.value.code == "blocked_address"
        ssrf.check_target("http://127.0.0.1:8080/", allow_private=True)
        ssrf.check_target("https://hooks.example.com/", allow_private=False)  # names: the resolver's job
        ssrf.check_target("https://8.8.8.8/", allow_private=False)
    asyncio.run(run())


@pytest.mark.parametrize("url", ["https://xn--bcher-kva.example/x", "https://bücher.example/x",
                                 "https://[2606:4700:4700:0:0:0:0:1111]/x", "https://Example.COM./x"])
def test_punycode_unicode_and_uncompressed_ipv6_hosts_are_valid_urls(url):
    ssrf.check_url_form(url, allow_http=False)
