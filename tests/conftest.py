"""Fixtures: one API process for the session, a real API key, a stub gateway per test."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.servers import (
    Api,
    StubGateway,
    drop_postgres_database,
    postgres_database_or_skip,
    run_smsgw,
    start_api,
)

PUBLIC_URL = "https://sms.example.test"
ADMIN_KEY = "test-admin-key-" + "x" * 32


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request) -> dict[str, str]:
    """Each test that takes it runs twice: on SQLite (a file of its own, the default)
    and on PostgreSQL (a database of its own, created here and dropped after).
    Yields the environment overrides that choose it."""
    if request.param == "sqlite":
        yield {}
        return
    url = postgres_database_or_skip()
    yield {"SMSGW_DATABASE_URL": url}
    drop_postgres_database(url)


@pytest.fixture
def empty_database(database, tmp_path) -> str:
    """The URL of a database of the test's own, with nothing in it, on each database in turn
    (for a test that migrates it, or not, and starts its own API or commands on it)."""
    if "SMSGW_DATABASE_URL" not in database:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url = postgres_database_or_skip()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def api(database, tmp_path_factory) -> Api:
    """The API as a real process, on each database in turn."""
    server = start_api(tmp_path_factory.mktemp("api"), SMSGW_PUBLIC_URL=PUBLIC_URL, SMSGW_ADMIN_KEY=ADMIN_KEY,
                       **database)
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def api_key(api) -> str:
    """A key made the way a user makes one: ``smsgw apikey create``."""
    out = run_smsgw(api.env, "apikey", "create", "--name", "tests").stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def client(api, api_key):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10) as c:
        yield c


@pytest.fixture
def anonymous(api):
    with httpx.Client(base_url=api.url, timeout=10) as c:
        yield c


@pytest.fixture
def stub():
    gateway = StubGateway().start()
    yield gateway
    gateway.stop()


_names = itertools.count(1)


@pytest.fixture
def make_gateway(client):
    """Create a gateway over the API; fields default to a Jasmin REST gateway."""

    def make(**fields) -> dict:
        body = {
            "name": f"gateway {next(_names)}",
            "provider_type": "jasmin",
            "server_host": "127.0.0.1",
            "server_port": 9,
            "api_path": "secure/send",
            "username": "jasmin-user",
            "password": "jasmin-secret-pw",
            "default_sender_id": "ACME",
            **fields,
        }
        response = client.post("/api/sms-gateways", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]

    return make


@pytest.fixture
def stub_gateway(make_gateway, stub):
    """A gateway record pointing at the stub gateway, which answers like Jasmin's REST API."""
    stub.answer(200, {"data": 'Success "stub-id-1'})
    return make_gateway(server_port=stub.port)
