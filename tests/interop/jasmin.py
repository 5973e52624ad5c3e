"""Run a real Jasmin SMS gateway (jasmin==0.11.0 from PyPI) on this machine for interop tests.

``start_jasmin()`` does, in order:

1. finds Python 3.11 and makes (or reuses) a virtualenv with jasmin==0.11.0 in
   ``var/interop/jasmin-venv`` (0.11.1 never throws receipts: upstream #1236);
2. checks that RabbitMQ (guest/guest, 127.0.0.1:5672) and Redis (127.0.0.1:6379)
   answer, stops a jasmind that an earlier, interrupted run of this harness left
   behind, removes a stale ``/tmp/jasmind.lock`` and purges the RabbitMQ queues
   and Redis keys that an earlier Jasmin left;
3. starts the SMSC stand-in (``smsc.py``) on a free loopback port;
4. writes a jasmin.cfg that binds everything to 127.0.0.1 (Jasmin's default
   ports: 1401 HTTP API, 8990 jCli, 2775 SMPP server, 8988/8989/14000 PB) and
   starts jasmind, waiting for its ports by condition;
5. configures it over jCli (a telnet dialogue on a plain socket): a group, a
   user, an SMPP client connector to the stand-in with submit_throughput 0, a
   default MT route, then starts the connector and waits until it is bound;
6. starts the REST API (twistd, WSGI ``jasmin.protocols.rest.api``) on a free
   loopback port. It always talks to the HTTP API at 127.0.0.1:1401 (hard-coded
   in Jasmin), which is why the HTTP API keeps its default port.

``Jasmin.stop()`` sends SIGTERM to both processes (SIGKILL only if they do not
exit) and stops the stand-in. Nothing here sleeps for a fixed time: every wait
is a poll on a condition with a deadline.
"""

from __future__ import annotations

import base64
import fcntl
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .smsc import SmscStandIn

JASMIN_VERSION = "0.11.0"
ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / "var" / "interop"
VENV = STATE_DIR / "jasmin-venv"
LOCK_FILE = Path("/tmp/jasmind.lock")  # hard-coded in jasmind.py: FileLock("/tmp/jasmind")
PID_FILE = STATE_DIR / "pids"          # pids this harness started, for cleaning up after a crash

HOST = "127.0.0.1"
HTTP_API_PORT = 1401    # the REST API proxies to 127.0.0.1:1401, hard-coded
JCLI_PORT = 8990
SMPP_SERVER_PORT = 2775
PB_PORTS = (8988, 8989, 14000)  # router, client manager, SMPP server PB
JASMIN_PORTS = (HTTP_API_PORT, JCLI_PORT, SMPP_SERVER_PORT, *PB_PORTS)

JCLI_ADMIN = ("jcliadmin", "jclipwd")
USERNAME = "interop"
PASSWORD = "interop-pw"   # Jasmin allows 1..16 characters
GROUP = "interop"
CONNECTOR = "smsc1"

# Queues and keys a Jasmin leaves behind (seen with `rabbitmqctl list_queues` after a run).
JASMIN_QUEUE = re.compile(r"^(dlr_thrower|deliver_sm_thrower|DLRLookup-.*|RouterPB_.*|submit\.sm\..*)$")
JASMIN_REDIS_PATTERNS = ("dlr:*", "queue-msgid:*")


def jasmin_smsc_id(smsc_message_id: str) -> str:
    """How Jasmin spells an SMSC message id in receipts' ``id_smsc`` and its logs.

    Jasmin 0.11 upper-cases the id from submit_sm_resp and strips its leading
    zeros (``managers/content.py``, ``managers/listeners.py``, dlr_msg_id_bases 0),
    so the stand-in's "046cca20..." comes back as "46CCA20...".
    """
    return smsc_message_id.upper().lstrip("0")


class ServiceUnavailable(RuntimeError):
    """Something the machine must provide is missing: RabbitMQ, Redis or Python 3.11."""


class HarnessError(RuntimeError):
    """Jasmin did not come up as configured."""


# =============================================================================
# Small helpers
# =============================================================================

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], str | None] | None = None) -> None:
    """Poll ``condition`` until true; ``alive`` returns a reason to give up early (a dead process)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None and (reason := alive()):
            raise HarnessError(f"{reason} while waiting for {what}")
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def find_python311() -> str | None:
    candidates = [os.environ.get("SMSGW_PYTHON311"), shutil.which("python3.11"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.11*/bin/python3.11")), reverse=True),
                  "/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def redis_command(*args: str, port: int = 6379) -> object:
    """One Redis command over RESP on a plain socket (enough for PING, SCAN and DEL)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((HOST, port), timeout=3) as sock:
        sock.sendall(payload)
        reader = sock.makefile("rb")
        return _read_resp(reader)


def _read_resp(reader) -> object:
    line = reader.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"Redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        return [_read_resp(reader) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected Redis reply {line!r}")


def amqp_ready(port: int = 5672) -> bool:
    """RabbitMQ answers an AMQP 0-9-1 protocol header with connection.start (a method frame)."""
    try:
        with socket.create_connection((HOST, port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def check_services() -> None:
    """Raise ServiceUnavailable unless Python 3.11, RabbitMQ and Redis are there."""
    missing = []
    if find_python311() is None:
        missing.append("Python 3.11 (set SMSGW_PYTHON311 or install python3.11)")
    if not amqp_ready():
        missing.append(f"RabbitMQ (AMQP at {HOST}:5672)")
    try:
        if redis_command("PING") != "PONG":
            missing.append(f"Redis at {HOST}:6379 (no PONG)")
    except OSError:
        missing.append(f"Redis at {HOST}:6379")
    if missing:
        raise ServiceUnavailable("missing for the Jasmin interop tests: " + "; ".join(missing))


# =============================================================================
# The virtualenv
# =============================================================================

def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def venv_has_jasmin(venv: Path = VENV) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    check = ("import importlib.metadata as m, sys, jasmin; "
             f"sys.exit(m.version('jasmin') != {JASMIN_VERSION!r})")
    return subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0


def ensure_venv(venv: Path = VENV) -> Path:
    """The cached Jasmin virtualenv, made on first use (about 30 s: pip install jasmin==0.11.0)."""
    if venv_has_jasmin(venv):
        return venv
    python311 = find_python311()
    if python311 is None:
        raise ServiceUnavailable("Python 3.11 not found (set SMSGW_PYTHON311)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "jasmin-venv-install.log"
    with open(log, "w") as out:
        steps = [[python311, "-m", "venv", str(venv)],
                 [str(venv_python(venv)), "-m", "pip", "install", "--quiet", f"jasmin=={JASMIN_VERSION}"]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise HarnessError(f"could not build the Jasmin venv: {' '.join(step)} failed, see {log}")
    if not venv_has_jasmin(venv):
        raise HarnessError(f"jasmin=={JASMIN_VERSION} not importable in {venv} after install, see {log}")
    return venv


def amqp_spec(venv: Path = VENV) -> Path:
    """The AMQP 0-9-1 spec that txamqp (installed with Jasmin) carries; the wheel ships none."""
    found = sorted(venv.glob("lib/python3*/site-packages/txamqp/specs/standard/amqp0-9-1.stripped.xml"))
    if not found:
        raise HarnessError(f"no txamqp AMQP 0-9-1 spec in {venv}")
    return found[0]


# =============================================================================
# Leftovers from earlier runs
# =============================================================================

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return ""


def _jasmind_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "jasmind.py" in _cmdline(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_leftovers() -> None:
    """Stop processes an interrupted earlier run of this harness started (by the pids it recorded)."""
    if PID_FILE.exists():
        for line in PID_FILE.read_text().split():
            pid = int(line)
            cmd = _cmdline(pid)
            if "jasmind.py" in cmd or "jasmin.protocols.rest.api" in cmd:
                _terminate(pid)
        PID_FILE.unlink()


def clear_stale_lock() -> None:
    """Remove /tmp/jasmind.lock when no jasmind is alive; refuse to run next to a live one."""
    others = _jasmind_pids()
    if others:
        raise HarnessError(f"another jasmind is running (pid {', '.join(map(str, others))}); "
                           "only one can run per host (its lock file and ports are fixed)")
    if LOCK_FILE.exists():
        inode = LOCK_FILE.stat().st_ino
        LOCK_FILE.unlink()
        # lockfile's hard-linked unique file ("<host>-<thread>.<pid>...") is left next to it
        for sibling in LOCK_FILE.parent.iterdir():
            try:
                if sibling.stat().st_ino == inode and sibling.is_file():
                    sibling.unlink()
            except OSError:
                pass


def purge_redis() -> int:
    deleted = 0
    for pattern in JASMIN_REDIS_PATTERNS:
        cursor = "0"
        while True:
            cursor, keys = redis_command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            if keys:
                deleted += redis_command("DEL", *keys)
            if cursor == "0":
                break
    return deleted


def purge_rabbitmq(venv: Path = VENV) -> list[str]:
    """Purge Jasmin's leftover queues: rabbitmqctl if present, else the amqp client in the venv."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl:
        listed = subprocess.run([rabbitmqctl, "-q", "list_queues", "name", "messages"],
                                capture_output=True, text=True, timeout=60)
        if listed.returncode == 0:
            purged = []
            for line in listed.stdout.splitlines():
                parts = line.split()
                if len(parts) == 2 and JASMIN_QUEUE.match(parts[0]) and parts[1] != "0":
                    subprocess.run([rabbitmqctl, "-q", "purge_queue", parts[0]],
                                   capture_output=True, timeout=60, check=True)
                    purged.append(parts[0])
            return purged
    # Fallback: AMQP cannot list queues, so purge the fixed names (passive declare finds them).
    script = (
        "import amqp, sys\n"
        "names = sys.argv[1:]\n"
        "c = amqp.Connection('127.0.0.1:5672', userid='guest', password='guest', virtual_host='/')\n"
        "c.connect()\n"
        "for n in names:\n"
        "    ch = c.channel()\n"
        "    try:\n"
        "        ch.queue_declare(n, passive=True); ch.queue_purge(n); print(n)\n"
        "    except amqp.exceptions.NotFound:\n"
        "        pass\n"
        "c.close()\n"
    )
    names = ["dlr_thrower", "deliver_sm_thrower", "DLRLookup-main", "RouterPB_deliver_sm_all",
             "RouterPB_bill_request_submit_sm_resp_all", f"submit.sm.{CONNECTOR}"]
    out = subprocess.run([venv_python(venv), "-c", script, *names], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.split()


# =============================================================================
# jCli
# =============================================================================

IAC, SB, SE = 255, 250, 240


def strip_telnet(data: bytes) -> bytes:
    """Drop telnet negotiation (IAC sequences) from what the jCli server sent."""
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte != IAC:
            out.append(byte)
            i += 1
        elif i + 1 < len(data) and data[i + 1] == IAC:
            out.append(IAC)
            i += 2
        elif i + 1 < len(data) and data[i + 1] == SB:
            end = data.find(bytes([IAC, SE]), i + 2)
            i = len(data) if end < 0 else end + 2
        else:
            i += 3  # IAC DO/DONT/WILL/WONT <option>
    return bytes(out)


class JCli:
    """A jCli session on a plain socket (Jasmin's console speaks telnet, but needs no negotiation)."""

    MAIN_PROMPT = "jcli : "
    SESSION_PROMPT = "> "

    def __init__(self, port: int = JCLI_PORT, username: str = JCLI_ADMIN[0], password: str = JCLI_ADMIN[1],
                 timeout: float = 10.0):
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = ""
        # The Username prompt shows only once the client has sent a first line.
        self.expect("", also=("Authentication required.",))
        self.send("")
        self.expect("Username: ")
        self.send(username)
        self.expect("Password: ")
        self.send(password)
        reply = self.expect(self.MAIN_PROMPT, also=("Incorrect Username/Password",))
        if "Incorrect" in reply:
            raise HarnessError("jCli refused the admin credentials")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\r\n")

    def expect(self, marker: str, also: tuple[str, ...] = ()) -> str:
        """Read until the buffer ends with ``marker`` (or contains one of ``also``); return what came."""
        deadline = time.monotonic() + self.timeout
        while True:
            text = self.buffer.replace("\r", "")
            if (marker and text.endswith(marker)) or any(a in text for a in also):
                self.buffer = ""
                return text
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HarnessError(f"jCli: no {marker!r} within {self.timeout} s; got {text[-500:]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise HarnessError(f"jCli closed the connection; got {text[-500:]!r}")
            self.buffer += strip_telnet(chunk).decode("utf-8", "replace").replace("\x1bc", "").replace("\x1b[4h", "")

    def command(self, line: str) -> str:
        """A one-line command; returns its output (without the echo and the prompt)."""
        self.send(line)
        text = self.expect(self.MAIN_PROMPT)
        return text[: -len(self.MAIN_PROMPT)].split("\n", 1)[-1].strip()

    def add(self, command: str, fields: list[tuple[str, str]], success: str) -> str:
        """An interactive add (``group -a`` ...): one ``key value`` line each, then ``ok``."""
        self.send(command)
        self.expect(self.SESSION_PROMPT)
        for key, value in fields:
            self.send(f"{key} {value}")
            out = self.expect(self.SESSION_PROMPT, also=(self.MAIN_PROMPT,))
            if out.endswith(self.MAIN_PROMPT) or "Unknown" in out or "Error" in out or "Invalid" in out:
                raise HarnessError(f"jCli {command}: {key} {value} refused: {out!r}")
        self.send("ok")
        out = self.expect(self.MAIN_PROMPT, also=())
        if success not in out:
            raise HarnessError(f"jCli {command}: expected {success!r}, got {out!r}")
        return out

    def close(self) -> None:
        try:
            self.send("quit")
        except OSError:
            pass
        self.sock.close()


# =============================================================================
# The running Jasmin
# =============================================================================

@dataclass
class Jasmin:
    """What the ``jasmin`` fixture yields."""

    http_api_url: str            # http://127.0.0.1:1401 (send with POST /send, form or query params)
    rest_api_url: str            # http://127.0.0.1:<free port> (POST /secure/send, Basic Auth)
    username: str
    password: str
    smsc: SmscStandIn            # recorded submits: smsc.submits, smsc.receipts, smsc.wait_for_submit()
    connector_id: str
    workdir: Path                # config, store and logs of this run
    log_dir: Path                # Jasmin's own log files (messages.log, dlr-thrower.log, ...)
    jasmind_log: Path            # jasmind's stdout and stderr
    rest_api_log: Path           # twistd's stdout and stderr
    jcli_port: int = JCLI_PORT
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def basic_auth(self) -> str:
        """The REST API's Authorization header value."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @property
    def log_paths(self) -> dict[str, Path]:
        paths = {"jasmind": self.jasmind_log, "rest_api": self.rest_api_log}
        paths.update({p.stem: p for p in sorted(self.log_dir.glob("*.log"))})
        return paths

    def logs(self) -> str:
        """Every log of this run, concatenated (for assertion messages)."""
        parts = []
        for name, path in self.log_paths.items():
            if path.exists():
                parts.append(f"===== {name} ({path}) =====\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def jcli(self) -> JCli:
        """A new admin jCli session (close it when done)."""
        return JCli(self.jcli_port)

    def stop(self) -> None:
        for name in ("rest_api", "jasmind"):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.smsc.stop()
        if PID_FILE.exists():
            PID_FILE.unlink()
        if LOCK_FILE.exists() and not _jasmind_pids():
            clear_stale_lock()
        try:
            purge_redis()  # RabbitMQ's queues are purged at the next start (rabbitmqctl is slow)
        except (OSError, RuntimeError):
            pass


def write_config(workdir: Path, venv: Path) -> Path:
    config = workdir / "jasmin.cfg"
    sections = {
        "smpp-server": {"bind": HOST, "port": SMPP_SERVER_PORT},
        "smpp-server-pb": {"bind": HOST, "port": 14000},
        "client-management": {"bind": HOST, "port": 8989},
        "router": {"bind": HOST, "port": 8988},
        "http-api": {"bind": HOST, "port": HTTP_API_PORT},
        "jcli": {"bind": HOST, "port": JCLI_PORT},
        "amqp-broker": {"host": HOST, "port": 5672, "username": "guest", "password": "guest",
                        "vhost": "/", "spec": amqp_spec(venv)},
        "redis-client": {"host": HOST, "port": 6379, "dbid": 0},
    }
    config.write_text("".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()) + "\n"
        for name, options in sections.items()))
    return config


def jasmin_env(workdir: Path) -> dict[str, str]:
    """A clean environment: Jasmin reads any SECTION_OPTION variable as a config override."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")}
    env.update({
        "CONFIG_PATH": str(workdir),
        "STORE_PATH": str(workdir / "store") + "/",
        "LOG_PATH": str(workdir / "log"),
        "ROOT_PATH": str(workdir),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def _record_pid(pid: int) -> None:
    with open(PID_FILE, "a") as out:
        out.write(f"{pid}\n")


def _dead(proc: subprocess.Popen, name: str, log: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        if proc.poll() is None:
            return None
        return f"{name} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
    return check


def configure(jcli: JCli, smsc: SmscStandIn, username: str, password: str) -> None:
    jcli.add("group -a", [("gid", GROUP)], f"Successfully added Group [{GROUP}]")
    jcli.add("user -a", [("username", username), ("password", password), ("gid", GROUP), ("uid", username)],
             f"Successfully added User [{username}]")
    jcli.add("smppccm -a", [("cid", CONNECTOR), ("host", smsc.host), ("port", str(smsc.port)),
                            ("username", "jasmin"), ("password", "jasmin"),
                            ("submit_throughput", "0")],
             f"Successfully added connector [{CONNECTOR}]")
    jcli.add("mtrouter -a", [("type", "defaultroute"), ("connector", f"smppc({CONNECTOR})"), ("rate", "0.00")],
             "Successfully added MTRoute [DefaultRoute]")
    out = jcli.command(f"smppccm -1 {CONNECTOR}")
    if "Successfully started" not in out:
        raise HarnessError(f"jCli could not start connector {CONNECTOR}: {out!r}")


def add_limited_user(jasmin: "Jasmin", username: str, password: str, http_throughput: float) -> None:
    """Add a user to the running Jasmin's group whose HTTP sends are limited to
    ``http_throughput`` a second (``mt_messaging_cred quota http_throughput``).

    Jasmin enforces it per user in the HTTP API (so the REST API too): a send
    that comes less than 1/rate s after the user's last accepted one is answered
    403 ``User throughput exceeded``. The user listing is read back so a jCli that
    quietly ignored the quota fails here, not as a test that proves nothing.
    """
    jcli = jasmin.jcli()
    try:
        jcli.add("user -a", [("username", username), ("password", password), ("gid", GROUP), ("uid", username),
                             ("mt_messaging_cred", f"quota http_throughput {http_throughput}")],
                 f"Successfully added User [{username}]")
        listing = jcli.command("user -l")
    finally:
        jcli.close()
    row = next((line.split() for line in listing.splitlines() if line.startswith(f"#{username} ")), None)
    if row is None or row[-1] != f"{float(http_throughput)}/ND":
        raise HarnessError(f"user {username} is not limited to {http_throughput}/s in jCli's listing: {listing!r}")


def connector_bound(jcli: JCli) -> bool:
    listing = jcli.command("smppccm -l")
    return any(line.startswith(f"#{CONNECTOR} ") and "BOUND_TRX" in line for line in listing.splitlines())


def _prune_workdirs(keep: int) -> None:
    """Keep only the newest ``keep`` run folders (config and logs) under var/interop."""
    runs = sorted(STATE_DIR.glob("jasmin-*/"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        if old.name != VENV.name:
            shutil.rmtree(old, ignore_errors=True)


def start_jasmin(workdir: Path | None = None, receipt_delay: float = 0.2,
                 final_status: Callable | None = None) -> Jasmin:
    """Bring up the stand-in, jasmind and the REST API; the caller must ``stop()`` the result."""
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    check_services()
    venv = ensure_venv()
    timings["venv"] = time.monotonic() - t0

    stop_leftovers()
    clear_stale_lock()
    busy = [p for p in JASMIN_PORTS if port_open(p)]
    if busy:
        raise HarnessError(f"Jasmin's ports {busy} are taken on {HOST} by another program")
    purge_redis()
    purge_rabbitmq(venv)
    timings["cleanup"] = time.monotonic() - t0 - timings["venv"]

    if workdir is None:
        _prune_workdirs(keep=4)
        workdir = Path(tempfile.mkdtemp(prefix="jasmin-", dir=STATE_DIR))
    (workdir / "store").mkdir(parents=True, exist_ok=True)
    log_dir = workdir / "log"
    log_dir.mkdir(exist_ok=True)
    config = write_config(workdir, venv)
    env = jasmin_env(workdir)

    smsc_kwargs = {"receipt_delay": receipt_delay}
    if final_status is not None:
        smsc_kwargs["final_status"] = final_status
    smsc = SmscStandIn(**smsc_kwargs).start()

    jasmind_log = workdir / "jasmind.out"
    rest_log = workdir / "restapi.out"
    rest_port = free_port()
    harness = Jasmin(
        http_api_url=f"http://{HOST}:{HTTP_API_PORT}", rest_api_url=f"http://{HOST}:{rest_port}",
        username=USERNAME, password=PASSWORD, smsc=smsc, connector_id=CONNECTOR,
        workdir=workdir, log_dir=log_dir, jasmind_log=jasmind_log, rest_api_log=rest_log, timings=timings,
    )
    try:
        bin_dir = venv / "bin"
        with open(jasmind_log, "wb") as out:
            jasmind = subprocess.Popen(
                [str(bin_dir / "python"), str(bin_dir / "jasmind.py"), "-c", str(config),
                 "--enable-dlr-lookup", "--enable-dlr-thrower", "-u", JCLI_ADMIN[0], "-p", JCLI_ADMIN[1]],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        harness.processes["jasmind"] = jasmind
        _record_pid(jasmind.pid)
        with open(rest_log, "wb") as out:
            rest = subprocess.Popen(
                [str(bin_dir / "python"), str(bin_dir / "twistd"), "--pidfile", str(workdir / "twistd.pid"),
                 "-n", "web", "--wsgi=jasmin.protocols.rest.api", f"--listen=tcp:{rest_port}:interface={HOST}"],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        harness.processes["rest_api"] = rest
        _record_pid(rest.pid)

        jasmind_dead = _dead(jasmind, "jasmind", jasmind_log)
        wait_until(lambda: all(port_open(p) for p in (JCLI_PORT, HTTP_API_PORT)), 30,
                   "jasmind's jCli and HTTP API ports", jasmind_dead)
        timings["jasmind_up"] = time.monotonic() - t0

        jcli = JCli(JCLI_PORT)
        try:
            configure(jcli, smsc, USERNAME, PASSWORD)
            wait_until(lambda: connector_bound(jcli) and smsc.bound_sessions() > 0, 30,
                       f"connector {CONNECTOR} to bind to the SMSC stand-in", jasmind_dead)
        finally:
            jcli.close()
        timings["bound"] = time.monotonic() - t0

        wait_until(lambda: port_open(rest_port), 30, "the REST API's port", _dead(rest, "twistd", rest_log))
        timings["ready"] = time.monotonic() - t0
    except BaseException:
        harness.stop()
        raise
    return harness


class SessionLock:
    """One harness per host at a time (jasmind's lock and ports are fixed), across clones too."""

    PATH = Path("/tmp/smsgw-interop-jasmin.lock")

    def __init__(self, timeout: float = 300.0):
        self.timeout = timeout
        self.handle = None

    def __enter__(self) -> "SessionLock":
        self.handle = open(self.PATH, "a")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HarnessError("another test session holds the Jasmin harness") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


if __name__ == "__main__":  # manual use: python -m tests.interop.jasmin
    with SessionLock():
        running = start_jasmin()
        print(running)
        try:
            input("Jasmin is up; press Enter to stop it.\n")
        finally:
            running.stop()
    sys.exit(0)
