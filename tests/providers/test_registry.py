"""The registry of provider types, and the protocol-neutral pieces every provider uses."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from api import providers
from api.providers.base import gateway_url, retry_after

GATEWAY = {"server_host": "jasmin.local", "server_port": 8080, "api_path": "secure/send", "use_ssl": False}


@pytest.mark.parametrize("name, path, port", [
    ("jasmin", "secure/send", 8080),
    ("jasmin-http", "send", 1401),
    ("http", "send", None),
])
def test_each_provider_type_and_its_defaults(name, path, port):
    provider = providers.get(name)
    assert (provider.name, provider.default_path, provider.default_port) == (name, path, port)


def test_the_registry_holds_exactly_those():
    assert sorted(providers.PROVIDERS) == ["http", "jasmin", "jasmin-http"]
    with pytest.raises(KeyError):
        providers.get("smpp")


@pytest.mark.parametrize("changes, url", [
    ({}, "http://jasmin.local:8080/secure/send"),
    ({"use_ssl": True, "api_path": "/a/b"}, "https://jasmin.local:8080/a/b"),
    ({"server_host": "::1"}, "http://[::1]:8080/secure/send"),
    ({"server_host": "[::1]"}, "http://[::1]:8080/secure/send"),
])
def test_gateway_url_forms(changes, url):
    assert gateway_url({**GATEWAY, **changes}) == url


NOW = datetime(2026, 11, 27, 16, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("header, seconds", [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("007", 7.0),
    ("86400", 3600.0),                          # a gateway cannot park a message for a day
    ("9" * 5000, 3600.0),
    ("Fri, 27 Nov 2026 16:01:30 GMT", 90.0),    # an HTTP date
    ("Friday, 27-Nov-26 16:01:30 GMT", 90.0),   # the obsolete RFC 850 form
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),     # in the past: now
    ("Sat, 28 Nov 2026 16:00:00 GMT", 3600.0),
    (None, None), ("", None), ("-1", None), ("1.5", None), ("soon", None), ("١٢", None),
    ("Fri, 27 Nov 2026 99:01:30 GMT", None),
])
def test_retry_after_in_seconds_bounded_and_garbage_ignored(header, seconds):
    assert retry_after(header, NOW) == seconds
