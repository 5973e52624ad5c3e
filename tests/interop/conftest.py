"""The ``jasmin`` fixture: a real Jasmin 0.11.0 wired to the SMSC stand-in, once per session.

    def test_something(jasmin):
        jasmin.http_api_url     # "http://127.0.0.1:1401"   HTTP API: POST /send, credentials as params
        jasmin.rest_api_url     # "http://127.0.0.1:<port>" REST API: POST /secure/send, Basic Auth
        jasmin.username, jasmin.password, jasmin.basic_auth
        jasmin.smsc             # SmscStandIn: .submits, .receipts, .wait_for_submit(pred), .wait_for(cond)
        jasmin.connector_id     # "smsc1"
        jasmin.log_dir, jasmin.jasmind_log, jasmin.rest_api_log, jasmin.log_paths, jasmin.logs()

Without RabbitMQ, Redis or Python 3.11 the tests are skipped, or fail when
SMSGW_REQUIRE_SERVICES=1 (as CI sets it).
"""

from __future__ import annotations

import os

import pytest

from .jasmin import Jasmin, ServiceUnavailable, SessionLock, check_services, start_jasmin


def _services_required() -> bool:
    return os.environ.get("SMSGW_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def jasmin() -> Jasmin:
    try:
        check_services()
    except ServiceUnavailable as exc:
        if _services_required():
            pytest.fail(f"{exc} (SMSGW_REQUIRE_SERVICES=1)")
        pytest.skip(str(exc))
    with SessionLock():
        running = start_jasmin()
        try:
            yield running
        finally:
            running.stop()
