"""The checks ``scripts/run`` (``make run``) makes around starting the stack, so that it
fails at once and says why instead of printing a banner over a dead process.

``ports HOST PORT VARIABLE WHAT [HOST PORT VARIABLE WHAT ...]``: exit 1 naming each port
that cannot be listened on, the variable that sets it and the process that holds it (from
/proc, no tool needed).

``wait PID URL EXPECT WHAT [PID URL EXPECT WHAT ...]``: wait until each child answers at its URL (EXPECT ``200``:
with a 200; ``any``: with any HTTP answer); exit 1 as soon as one has exited, naming it,
or when one is alive but has not answered within the deadline (60 s, a busy machine).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEADLINE_S = 60.0


def listening_inodes(table: str, port: int) -> set[str]:
    """The inodes of the sockets bound to local ``port`` (listening, or bound and not yet
    listening) in a /proc/net/tcp(6) table's text."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] in ("0A", "07") and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(fields[9])
    return found


def holders(port: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, command line) of each process with a socket listening on ``port``, as far as
    this user may see; empty when none can be seen (another user's process, as non-root)."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / name).read_text(), port)
        except OSError:
            pass
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in proc.iterdir() if wanted else ():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                command = " ".join(command.split())
                found.append((int(entry.name), command[:117] + "..." if len(command) > 120 else command))
        except OSError:
            continue
    return found


def cannot_listen(host: str, port: int) -> str | None:
    """Why nothing could listen on host:port now (None: it can), as the children bind it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"{host} is not an address this machine can listen on ({exc.strerror})"
    for family, kind, proto, _, address in infos[:1]:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return None


def groups(args: list[str]) -> list[list[str]]:
    """The arguments four at a time."""
    if len(args) % 4:
        raise ValueError("arguments come in groups of four")
    return [args[i:i + 4] for i in range(0, len(args), 4)]


def check_ports(args: list[str]) -> int:
    problems = 0
    for host, port, variable, what in groups(args):
        why = cannot_listen(host, int(port))
        if why is None:
            continue
        problems += 1
        held = holders(int(port))
        by = "; ".join(f"pid {pid}: {command}" for pid, command in held) if held else "a process this user cannot see"
        extra = f" by {by}" if why == "already in use" else ""
        print(f"smsgw: cannot start {what}: port {port} on {host} ({variable}) is {why}{extra}. "
              f"Stop that process, or set {variable} to a free port.", file=sys.stderr)
    return 1 if problems else 0


def exited(pid: int) -> bool:
    """Has ``pid`` exited (gone, or a zombie its parent has not reaped yet)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def answers(url: str, expect: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return expect == "any" or response.status == int(expect)
    except urllib.error.HTTPError:
        return expect == "any"
    except (OSError, ValueError):
        return False


def wait_for(args: list[str]) -> int:
    waiting = [(int(pid), url, expect, what) for pid, url, expect, what in groups(args)]
    deadline = time.monotonic() + DEADLINE_S
    while waiting:
        for child in list(waiting):
            pid, url, expect, what = child
            if exited(pid):
                print(f"smsgw: {what} exited before it answered at {url} (pid {pid}); "
                      "its messages are above. Stopping the others.", file=sys.stderr)
                return 1
            if answers(url, expect):
                waiting.remove(child)
        if waiting and time.monotonic() > deadline:
            pid, url, _, what = waiting[0]
            print(f"smsgw: {what} is running (pid {pid}) but did not answer at {url} within "
                  f"{DEADLINE_S:.0f} s. Stopping everything.", file=sys.stderr)
            return 1
        if waiting:
            time.sleep(0.1)
    return 0


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["ports"]:
            return check_ports(argv[1:])
        if argv[:1] == ["wait"]:
            return wait_for(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C while waiting: scripts/run stops the stack and exits 0
        return 130
    except ValueError:
        pass
    print("usage: stack_checks.py ports HOST PORT VARIABLE WHAT ... | wait PID URL EXPECT WHAT ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
