"""Run a command inside the system-call sandbox a shipped systemd unit asks for, without
systemd (the tests have no systemd running):

    python -m tests.systemd_sandbox deploy/systemd/smsgw-api.service -- smsgw api

The unit's SystemCallFilter= (with its groups as this host's systemd-analyze lists them,
other calls failing with SystemCallErrorNumber=), MemoryDenyWriteExecute= and
RestrictAddressFamilies= become seccomp filters the way systemd 252 builds them, with
no_new_privs set (NoNewPrivileges=); then the command is exec'd under them. So a test
sees whether Python, uvloop, cryptography and mitmproxy still work in the unit's
sandbox: a forbidden call fails there as it would under systemd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
AF_MAX = 46  # Linux's address families are 0 .. AF_MAX - 1


def scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """libseccomp's struct scmp_arg_cmp."""
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the [Service] section, a key's values in order (systemd
    allows a key again: Environment=, SystemCallFilter=)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: each @group and its members (calls or @groups)."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                             check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        calls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return calls


def allowed_calls(settings: dict[str, list[str]]) -> set[str] | None:
    """What SystemCallFilter= lets through: its allow lists, less its ~deny lists; None without one."""
    if "SystemCallFilter" not in settings:
        return None
    groups = syscall_groups()
    allowed: set[str] = set()
    denied: set[str] = set()
    for value in settings["SystemCallFilter"]:
        if value.startswith("~"):
            denied |= expand(value[1:].split(), groups)
        else:
            allowed |= expand(value.split(), groups)
    return allowed - denied


class Filter:
    def __init__(self, library, default_action: int):
        self.library = library
        self.context = library.seccomp_init(default_action)
        assert self.context, "seccomp_init failed"

    def rule(self, action: int, name: str, *comparisons: tuple[int, int, int, int]) -> None:
        number = self.library.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not a call of this architecture (systemd skips these too)
            return
        array = (ArgCmp * max(len(comparisons), 1))(*(ArgCmp(*c) for c in comparisons))
        result = self.library.seccomp_rule_add_array(self.context, action, number, len(comparisons), array)
        assert result == 0, f"seccomp_rule_add({name}): {os.strerror(-result)}"

    def load(self) -> None:
        result = self.library.seccomp_load(self.context)
        assert result == 0, f"seccomp_load: {os.strerror(-result)}"


def load_sandbox(unit: Path) -> None:
    settings = unit_settings(unit)
    library = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_init.argtypes = [ctypes.c_uint32]
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    library.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(ArgCmp)]
    library.seccomp_load.argtypes = [ctypes.c_void_p]

    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        # systemd's seccomp_memory_deny_write_execute(): no memory both writable and executable.
        mdwe = Filter(library, SCMP_ACT_ALLOW)
        mdwe.rule(scmp_act_errno(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC | PROT_WRITE,
                                                        PROT_EXEC | PROT_WRITE))
        mdwe.rule(scmp_act_errno(errno.EPERM), "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        mdwe.rule(scmp_act_errno(errno.EPERM), "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        mdwe.rule(scmp_act_errno(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        mdwe.load()

    if "RestrictAddressFamilies" in settings:
        families = {getattr(socket, name) for name in settings["RestrictAddressFamilies"][-1].split()}
        restrict = Filter(library, SCMP_ACT_ALLOW)
        for family in range(AF_MAX):
            if family not in families:
                restrict.rule(scmp_act_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, family, 0))
        restrict.load()

    allowed = allowed_calls(settings)
    if allowed is not None:
        number = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
        allow_list = Filter(library, scmp_act_errno(number))
        for name in sorted(allowed):
            allow_list.rule(SCMP_ACT_ALLOW, name)
        allow_list.load()


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m tests.systemd_sandbox UNIT -- COMMAND [ARG ...]")
    load_sandbox(Path(argv[0]))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
