"""The gateway protocols smsgw speaks, one module each, and the registry of them.

A module (``jasmin``, ``http_json``) holds everything about its protocol —
building the request, reading the reply, its defaults — as pure functions, and
names its ``provider_type`` values in a ``PROVIDERS`` tuple; the shared,
protocol-neutral pieces are in ``base``. ``api.gateway_call`` does the I/O.
Adding a provider: a module here, its line below, and its test table in
``tests/providers/``.
"""

from __future__ import annotations

from api.providers import http_json, jasmin
from api.providers.base import Provider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (*jasmin.PROVIDERS, *http_json.PROVIDERS)}


def get(name: str) -> Provider:
    """The provider for a ``provider_type``; KeyError for one smsgw does not speak."""
    return PROVIDERS[name]
