"""SMSGW_* variables: every one smsgw reads is known, and a typo is said at start, never silent."""

from __future__ import annotations

import os
import re
import subprocess

from api.config import KNOWN_VARIABLES, unknown_variables
from tests.servers import ROOT, SMSGW

NAME = re.compile(r"SMSGW_[A-Z0-9]+(?:_[A-Z0-9]+)*")
WHERE = ("api", "guard", "simulator", "scripts", "bench", "tests", "deploy")


def names_in_the_code() -> set[str]:
    found = set()
    for folder in WHERE:
        for path in (ROOT / folder).rglob("*"):
            if (path.is_file() and path.suffix in (".py", ".sh", ".lua", ".conf", "") and "__pycache__" not in path.parts
                    and path.name != "test_config_names.py"):  # this file's typos are on purpose
                found |= set(NAME.findall(path.read_text(errors="replace")))
    return found


def test_every_variable_the_code_reads_is_a_known_one():
    assert names_in_the_code() - KNOWN_VARIABLES == set()


def test_a_typo_names_what_it_probably_meant_and_known_ones_say_nothing():
    lines = unknown_variables({"SMSGW_GATEWY_TIMEOUT": "5", "SMSGW_DATABASE_URL": "sqlite:///x", "PATH": "/bin",
                               "SMSGW_NOTHING_LIKE_IT": "1"})
    assert lines == ["SMSGW_GATEWY_TIMEOUT is not a variable smsgw knows (did you mean SMSGW_GATEWAY_TIMEOUT?): "
                     "it is ignored", "SMSGW_NOTHING_LIKE_IT is not a variable smsgw knows: it is ignored"]


def test_the_command_warns_at_start_and_still_runs(tmp_path):
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "SMSGW_GATEWY_TIMEOUT": "5"}
    done = subprocess.run([*SMSGW, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "smsgw: warning: SMSGW_GATEWY_TIMEOUT is not a variable smsgw knows (did you mean " \
           "SMSGW_GATEWAY_TIMEOUT?)" in done.stderr


def test_version():
    done = subprocess.run([*SMSGW, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and re.fullmatch(r"smsgw \d+\.\d+\.\d+\n", done.stdout)
