"""Scoped and gateway-limited keys over the live API, on SQLite and PostgreSQL.

Before scopes, any key could read every gateway's callback token, rotate it,
change gateways and make keys: these tests each fail on that code.
"""

from __future__ import annotations

import itertools
import re

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.servers import error_body, run_smsgw

_names = itertools.count(1)


def cli_key(api, *args: str) -> str:
    out = run_smsgw(api.env, "apikey", "create", "--name", f"scoped {next(_names)}", *args).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def key_client(api):
    made = []

    def make(*args: str) -> httpx.Client:
        c = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {cli_key(api, *args)}"}, timeout=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def refused(response, message: str) -> None:
    assert response.status_code == 403, response.text
    assert error_body(response) == {"message": message}


def send(c, gateway_id: int):
    return c.post(f"/api/sms-gateways/{gateway_id}/send", json={"to_number": "+14155550123", "message": "hi"})


def test_a_send_only_key_sends_and_does_nothing_else(key_client, stub_gateway, stub):
    sender = key_client("--scope", "messages:send")
    gid = stub_gateway["id"]
    assert send(sender, gid).status_code == 201
    refused(sender.get("/api/sms-gateways"), "This key may not read SMS gateways.")
    refused(sender.get(f"/api/sms-gateways/{gid}"), "This key may not read SMS gateways.")
    refused(sender.patch(f"/api/sms-gateways/{gid}", json={"name": "x"}), "This key may not manage SMS gateways.")
    refused(sender.post(f"/api/sms-gateways/{gid}/callback-token/rotate"), "This key may not manage SMS gateways.")
    refused(sender.get(f"/api/sms-gateways/{gid}/messages"), "This key may not read messages.")
    refused(sender.get("/api/api-keys"), "This key may not manage API keys or read the audit trail.")
    refused(sender.get("/api/audit-events"), "This key may not manage API keys or read the audit trail.")


def test_a_read_key_sees_gateways_without_their_callback_tokens(key_client, client, stub_gateway):
    reader = key_client("--scope", "gateways:read", "--scope", "messages:read")
    gid, token = stub_gateway["id"], stub_gateway["callback_token"]
    listing = reader.get("/api/sms-gateways")
    shown = reader.get(f"/api/sms-gateways/{gid}")
    assert listing.status_code == shown.status_code == 200
    assert token not in listing.text and token not in shown.text
    assert [name for name in shown.json()["data"] if name.startswith("callback_token")] == []
    assert all(name not in g for g in listing.json()["data"] for name in ("callback_token",
                                                                          "callback_token_previous_expiries"))
    assert shown.json()["data"]["name"] == stub_gateway["name"]
    refused(reader.post(f"/api/sms-gateways/{gid}/callback-token/rotate"), "This key may not manage SMS gateways.")
    refused(send(reader, gid), "This key may not send messages.")
    assert client.get(f"/api/sms-gateways/{gid}").json()["data"]["callback_token"] == token  # full access still sees it


def test_the_admin_key_and_a_key_made_without_scope_have_every_scope(api, anonymous, key_client, make_gateway):
    gid = make_gateway()["id"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert "callback_token" in anonymous.get(f"/api/sms-gateways/{gid}", headers=admin).json()["data"]
    assert anonymous.get("/api/api-keys", headers=admin).status_code == 200
    default = key_client()
    assert "callback_token" in default.get(f"/api/sms-gateways/{gid}").json()["data"]
    assert default.get("/api/audit-events").status_code == 200
    listing = run_smsgw(api.env, "apikey", "list").stdout  # a table: ... SCOPES GATEWAYS COUNTRIES ...
    assert re.search(r"\ball\s+all\s+any\s", listing.splitlines()[-1])


def test_a_gateway_limited_key_uses_only_its_gateways(key_client, client, make_gateway, stub):
    stub.answer(200, {"data": 'Success "limited-1'})
    mine = make_gateway(server_port=stub.port)
    other = make_gateway(server_port=stub.port)
    theirs = send(client, other["id"]).json()["data"]
    limited = key_client("--gateway", str(mine["id"]))
    for method, path in [("GET", f"/api/sms-gateways/{other['id']}"),
                         ("PATCH", f"/api/sms-gateways/{other['id']}"),
                         ("DELETE", f"/api/sms-gateways/{other['id']}"),
                         ("POST", f"/api/sms-gateways/{other['id']}/callback-token/rotate"),
                         ("POST", f"/api/sms-gateways/{other['id']}/send"),
                         ("GET", f"/api/sms-gateways/{other['id']}/messages"),
                         ("GET", f"/api/sms-gateways/{other['id']}/unmatched-dlrs"),
                         ("GET", "/api/sms-gateways/999999999")]:
        refused(limited.request(method, path, json={"name": "x"}), "This key may not use this SMS gateway.")
    # another gateway's message is "not found", as an id that does not exist: ids cannot be probed
    for path in (f"/api/sms-messages/{theirs['id']}", f"/api/sms-messages/{theirs['id']}/events"):
        response = limited.get(path)
        assert response.status_code == 404 and error_body(response) == {"message": "SMS message not found."}
        assert client.get(path).status_code == 200
    assert [g["id"] for g in limited.get("/api/sms-gateways").json()["data"]] == [mine["id"]]
    refused(limited.post("/api/sms-gateways", json={"name": "n", "server_host": "h"}),
            "This key may not create SMS gateways: it is limited to some gateways.")
    own = send(limited, mine["id"])
    assert own.status_code == 201
    assert limited.get(f"/api/sms-messages/{own.json()['data']['id']}").status_code == 200
    assert limited.get(f"/api/sms-messages/{own.json()['data']['id']}/events").status_code == 200
    assert limited.get(f"/api/sms-gateways/{mine['id']}/unmatched-dlrs").status_code == 200


def test_keys_made_and_revoked_over_http(client, anonymous, make_gateway):
    gid = make_gateway()["id"]
    response = client.post("/api/api-keys", json={"name": "over http", "scopes": ["messages:read"],
                                                  "gateway_ids": [gid], "allowed_countries": ["gb", "US"]})
    assert response.status_code == 201, response.text
    made = response.json()["data"]
    key = made["key"]
    assert key.startswith("smsgw_")
    assert (made["scopes"], made["gateway_ids"], made["allowed_countries"]) == (["messages:read"], [gid], ["GB", "US"])
    listing = client.get("/api/api-keys")
    assert listing.status_code == 200
    assert key not in listing.text and made["id"] in [k["id"] for k in listing.json()["data"]]
    assert all("key" not in k and "key_hash" not in k for k in listing.json()["data"])
    headers = {"Authorization": f"Bearer {key}"}
    assert anonymous.get(f"/api/sms-gateways/{gid}/messages", headers=headers).status_code == 200
    refused(anonymous.get("/api/api-keys", headers=headers),
            "This key may not manage API keys or read the audit trail.")
    revoked = client.delete(f"/api/api-keys/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["data"]["revoked_at"]
    assert anonymous.get(f"/api/sms-gateways/{gid}/messages", headers=headers).status_code == 401
    assert client.delete(f"/api/api-keys/{made['id']}").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"scopes": ["all"]}, "name"),
    ({"name": "   ", "scopes": ["all"]}, "name"),
    ({"name": "n"}, "scopes"),
    ({"name": "n", "scopes": []}, "scopes"),
    ({"name": "n", "scopes": ["messages:write"]}, "scopes"),
    ({"name": "n", "scopes": "all"}, "scopes"),
    ({"name": "n", "scopes": ["all"], "gateway_ids": [999999999]}, "gateway_ids"),
    ({"name": "n", "scopes": ["all"], "gateway_ids": ["1"]}, "gateway_ids"),
    ({"name": "n", "scopes": ["all"], "gateway_ids": []}, "gateway_ids"),
    ({"name": "n", "scopes": ["all"], "allowed_countries": ["UK"]}, "allowed_countries"),
    ({"name": "n", "scopes": ["all"], "allowed_countries": []}, "allowed_countries"),
    ({"name": "n", "scopes": ["all"], "expires": "never"}, "expires"),
])
def test_a_bad_key_request_is_422_naming_the_field(client, body, field):
    response = client.post("/api/api-keys", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["errors"]


def test_a_key_cannot_make_or_revoke_a_key_stronger_than_itself(client, key_client, make_gateway):
    gid = make_gateway()["id"]
    keymaster = key_client("--scope", "keys:admin", "--scope", "messages:read", "--country", "GB")
    refused(keymaster.post("/api/api-keys", json={"name": "n", "scopes": ["all"], "allowed_countries": ["GB"]}),
            "This key may not grant scopes it does not hold.")
    refused(keymaster.post("/api/api-keys", json={"name": "n", "scopes": ["messages:read"]}),
            "This key may not grant destination countries outside its own.")
    # the grant is checked before the gateway ids: a refused grant never says which ids exist
    refused(keymaster.post("/api/api-keys", json={"name": "n", "scopes": ["all"], "gateway_ids": [999999999]}),
            "This key may not grant scopes it does not hold.")
    weaker = keymaster.post("/api/api-keys", json={"name": "n", "scopes": ["messages:read"], "gateway_ids": [gid],
                                                   "allowed_countries": ["GB"]})
    assert weaker.status_code == 201, weaker.text
    assert keymaster.delete(f"/api/api-keys/{weaker.json()['data']['id']}").status_code == 200
    stronger = client.post("/api/api-keys", json={"name": "strong", "scopes": ["all"]}).json()["data"]
    refused(keymaster.delete(f"/api/api-keys/{stronger['id']}"),
            "This key may not revoke a key with scopes it does not hold.")


def test_a_gateway_admin_may_make_a_read_only_key(key_client, anonymous, make_gateway):
    """gateways:admin includes gateways:read, so a key holding it may hand out a reader."""
    gid = make_gateway()["id"]
    admin = key_client("--scope", "gateways:admin", "--scope", "keys:admin")
    made = admin.post("/api/api-keys", json={"name": "reader", "scopes": ["gateways:read"]})
    assert made.status_code == 201, made.text
    reader = {"Authorization": f"Bearer {made.json()['data']['key']}"}
    assert anonymous.get(f"/api/sms-gateways/{gid}", headers=reader).status_code == 200


LIMITED_KEYS_ADMIN = "This key may not manage API keys or read the audit trail: it is limited to some gateways."


def test_a_gateway_limited_key_may_not_manage_keys_or_read_the_trail(client, key_client, make_gateway):
    """A keys:admin key limited to one gateway saw every gateway's audit rows and every key, and
    its 422 "No SMS gateway has id ..." against a 403 told which gateway ids exist."""
    mine, other = make_gateway()["id"], make_gateway()["id"]
    client.patch(f"/api/sms-gateways/{other}", json={"notes": "another gateway's business"})
    victim = client.post("/api/api-keys", json={"name": "victim", "scopes": ["messages:read"]}).json()["data"]
    limited = key_client("--scope", "keys:admin", "--scope", "messages:read", "--gateway", str(mine))
    refused(limited.get("/api/audit-events"), LIMITED_KEYS_ADMIN)
    refused(limited.get("/api/api-keys"), LIMITED_KEYS_ADMIN)
    for ids in ([mine], [other], [999999999]):
        refused(limited.post("/api/api-keys", json={"name": "n", "scopes": ["messages:read"], "gateway_ids": ids}),
                LIMITED_KEYS_ADMIN)
    for key_id in (victim["id"], 999999999):
        refused(limited.delete(f"/api/api-keys/{key_id}"), LIMITED_KEYS_ADMIN)
    assert client.get("/api/api-keys").status_code == 200  # an unlimited key still may


@pytest.mark.parametrize("args, problem", [
    (["--name", ""], "--name must not be empty"),
    (["--name", "   "], "--name must not be empty"),
    (["--name", "n", "--scope", "messages:write"], "unknown scope 'messages:write'"),
    (["--name", "n", "--country", "UK"], "unknown country 'UK'"),
    (["--name", "n", "--gateway", "999999999"], "no SMS gateway has id 999999999"),
])
def test_the_cli_refuses_a_bad_key_with_exit_2(api, args, problem):
    result = run_smsgw(api.env, "apikey", "create", *args, check=False)
    assert result.returncode == 2
    assert problem in result.stderr
    assert "smsgw_" not in result.stdout


def test_the_cli_shows_a_keys_limits(api, make_gateway):
    gid = make_gateway()["id"]
    out = run_smsgw(api.env, "apikey", "create", "--name", "limits shown", "--scope", "messages:send",
                    "--scope", "messages:read", "--gateway", str(gid), "--country", "gb").stdout
    assert f"scopes messages:send,messages:read; gateways {gid}; countries GB" in out
    line = next(line for line in run_smsgw(api.env, "apikey", "list").stdout.splitlines() if "limits shown" in line)
    assert re.search(rf"\smessages:send,messages:read\s+{gid}\s+GB\s", line)
