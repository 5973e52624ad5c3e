"""smsgw's help as a person reads it: plain text, a description and the variables each
command reads; and ``smsgw apikey list`` as a table with headers, or JSON as the API lists keys."""

from __future__ import annotations

import argparse
import json
import os
import re

import httpx
import pytest

from api import cli
from api.config import KNOWN_VARIABLES
from tests.servers import start_api
from tests.test_cli_gateways import smsgw

MARKUP = re.compile(r"``|:[a-z]+:`|\*\*")
VARIABLE = re.compile(r"^  (SMSGW_[A-Z0-9_]+)  ", re.MULTILINE)


def every_command(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command the parser knows, as the words that name it."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += every_command(sub, (*prefix, name))
    return found


COMMANDS = every_command(cli.parser())


def test_the_commands_the_issue_names_exist():
    for words in [("gateway", action) for action in ("list", "show", "create", "update", "rotate-token",
                                                     "deactivate")] + \
                 [("message", "show"), ("apikey", "create"), ("apikey", "list"), ("apikey", "revoke")]:
        assert words in COMMANDS


def test_top_level_help_is_plain_text():
    done = smsgw(dict(os.environ), "--help")
    assert done.returncode == 0
    assert not MARKUP.search(done.stdout), done.stdout
    assert "SMSGW_LOG_FORMAT" in done.stdout and "Exit status" in done.stdout


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_each_command_s_help_is_plain_and_names_the_variables_it_reads(words):
    done = smsgw(dict(os.environ), *words, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert not MARKUP.search(text), text
    usage, _, rest = text.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert description and not description.startswith(("positional", "options")), text  # a description
    if words == ("secrets", "generate-key"):  # it reads nothing: it makes a key
        return
    assert "Variables it reads:" in text, text
    named = VARIABLE.findall(text.split("Variables it reads:")[1])
    assert named and set(named) <= KNOWN_VARIABLES


def test_apikey_list_is_a_table_with_headers_or_the_api_s_json(empty_database, tmp_path):
    admin = "cli-help-admin-key-" + "w" * 24
    api = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database, SMSGW_ADMIN_KEY=admin)
    try:
        made = smsgw(api.env, "apikey", "create", "--name", "reporting", "--scope", "messages:read",
                     "--gateway", "1", "--country", "GB", "--country", "IE")
        assert made.returncode == 2 and "no SMS gateway has id 1" in made.stderr  # limited to what exists
        assert smsgw(api.env, "apikey", "create", "--name", "ops").returncode == 0
        made = smsgw(api.env, "apikey", "create", "--name", "reporting", "--scope", "messages:read",
                     "--country", "GB", "--country", "IE")
        key = made.stdout.strip().splitlines()[-1]
        assert smsgw(api.env, "apikey", "revoke", "1").returncode == 0
        assert smsgw(api.env, "apikey", "revoke", "1").returncode == 1  # no longer active

        table = smsgw(api.env, "apikey", "list").stdout.splitlines()
        assert table[0].split() == ["ID", "NAME", "PREFIX", "SCOPES", "GATEWAYS", "COUNTRIES", "CREATED", "REVOKED"]
        ops, reporting = (line.split() for line in table[1:])
        assert ops[:6] == ["1", "ops", ops[2], "all", "all", "any"] and ops[7] != "-"  # revoked, and when
        assert reporting[:6] == ["2", "reporting", key[:12] + "...", "messages:read", "all", "GB,IE"]
        assert reporting[7] == "-"
        assert key not in "\n".join(table)

        as_json = json.loads(smsgw(api.env, "apikey", "list", "--json").stdout)
        over_api = httpx.get(f"{api.url}/api/api-keys", headers={"Authorization": f"Bearer {admin}"}).json()
        assert as_json == over_api["data"]
    finally:
        api.process.stop()


def test_an_empty_key_name_is_refused(tmp_path):
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}"}
    assert smsgw(env, "migrate").returncode == 0
    for name in ("", "   "):
        done = smsgw(env, "apikey", "create", "--name", name)
        assert done.returncode == 2 and "--name must not be empty" in done.stderr
    assert smsgw(env, "apikey", "list").stdout.splitlines()[1:] == []
