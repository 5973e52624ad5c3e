"""The registry of provider types, and the protocol-neutral pieces every provider uses."""

from __future__ import annotations

import pytest

from api import providers
from api.providers.base import gateway_url

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
