"""The deployment as the README's "Deployment" section writes it: the systemd units,
verified offline by systemd-analyze and hardened; the environment file both systemd and
sh read; the nginx templates rendered only by ``deploy/nginx/render`` and run from a
prefix of their own, writing nothing elsewhere; and a receipt over TLS, from a private
CA's certificate, sent the way a gateway sends it to the address SMSGW_PUBLIC_URL gave."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from api import config
from tests.nginx import DEPLOY, NGINX, nginx_before_stubs, render, start_nginx
from tests.servers import ROOT, StubGateway, free_port, run_smsgw, services_required, start_api, start_guard
from tests.systemd_sandbox import unit_settings

SYSTEMD = ROOT / "deploy" / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# The one substitution the units document: where smsgw is installed.
PREFIX = "/opt/smsgw"
UNITS = ["smsgw-api.service", "smsgw-guard.service"]


def rendered_units(directory: Path) -> list[Path]:
    """The shipped units with the install prefix replaced (sed 's|/opt/smsgw|PREFIX|g'),
    here by this test run's own virtualenv, which holds a real bin/smsgw."""
    prefix = Path(sys.prefix)
    assert (prefix / "bin" / "smsgw").exists(), "the tests run from a virtualenv with smsgw installed"
    paths = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert PREFIX in text, f"{name} no longer names {PREFIX}"
        path = directory / name
        path.write_text(text.replace(PREFIX, str(prefix)))
        paths.append(path)
    return paths


needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None and not services_required(),
                                           reason="systemd-analyze is not installed")


@needs_systemd_analyze
def test_the_units_pass_systemd_analyze_verify(tmp_path):
    result = subprocess.run([SYSTEMD_ANALYZE or "systemd-analyze", "verify", *map(str, rendered_units(tmp_path))],
                            capture_output=True, text=True, cwd=tmp_path)
    # Not one warning: an unknown key or a bad value is only a warning to systemd,
    # and the unit then runs without what it said.
    assert (result.returncode, result.stderr.strip(), result.stdout.strip()) == (0, "", "")


@needs_systemd_analyze
def test_verify_does_check_the_command_paths(tmp_path):
    """The check above means something offline: with a prefix where smsgw is not
    installed, verify fails and names the command."""
    missing = tmp_path / "not-installed"
    for name in UNITS:
        (tmp_path / name).write_text((SYSTEMD / name).read_text().replace(PREFIX, str(missing)))
    result = subprocess.run([SYSTEMD_ANALYZE or "systemd-analyze", "verify", *UNITS],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert f"{missing}/bin/smsgw is not executable" in result.stderr


HARDENING = {
    "User": "smsgw",
    "StateDirectory": "smsgw",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes",
    "Restart": "on-failure",
    "EnvironmentFile": "/etc/smsgw/smsgw.env",
}


@pytest.mark.parametrize("name", UNITS)
def test_each_unit_is_hardened_and_runs_smsgw_as_documented(tmp_path, name):
    [unit] = [path for path in rendered_units(tmp_path) if path.name == name]
    settings = unit_settings(unit)
    for key, value in HARDENING.items():
        assert value in settings.get(key, []), f"{name}: {key}={value} is missing"
    assert "SMSGW_LOG_FORMAT=json" in settings["Environment"]
    smsgw = f"{sys.prefix}/bin/smsgw"
    if name == "smsgw-api.service":
        assert settings["ExecStartPre"] == [f"{smsgw} migrate"]
        assert settings["ExecStart"] == [f"{smsgw} api"]
    else:
        assert settings["ExecStart"] == [f"{smsgw} guard"]
        # mitmproxy writes its confdir: under ProtectSystem=strict only the state directory can be it
        [confdir] = [value for value in settings["Environment"] if value.startswith("SMSGW_GUARD_CONFDIR=")]
        assert confdir.partition("=")[2].startswith("/var/lib/smsgw/")
    # Every SMSGW_* a unit sets is one smsgw knows (an unknown one is only warned about).
    for value in settings["Environment"]:
        assert value.partition("=")[0] in config.KNOWN_VARIABLES, value


@needs_systemd_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_rates_each_unit_s_exposure_low(tmp_path, name):
    [unit] = [path for path in rendered_units(tmp_path) if path.name == name]
    result = subprocess.run([SYSTEMD_ANALYZE or "systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(unit)], capture_output=True, text=True, cwd=tmp_path)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    # 0 is a unit that can do nothing, 10 one that runs as root unconfined; systemd
    # calls under 2 "OK" (an unhardened service scores 9.6).
    assert float(found.group(1)) < 2.0, result.stdout


# --- /etc/smsgw/smsgw.env -----------------------------------------------------------

def env_file_lines() -> list[tuple[str, str]]:
    lines = []
    for line in (SYSTEMD / "smsgw.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            lines.append((name, value))
    return lines


def test_the_environment_file_names_only_known_variables_in_a_form_sh_and_systemd_share():
    lines = env_file_lines()
    assert lines
    for name, value in lines:
        assert name in config.KNOWN_VARIABLES, name
        # No quotes, spaces or $: systemd's EnvironmentFile= and sh's "." read it alike.
        assert re.fullmatch(r"[A-Za-z0-9_:/.@+=,-]*", value), f"{name}={value}"
    settings = dict(lines)
    assert re.fullmatch(r"https://[^/:]+:\d+", settings["SMSGW_PUBLIC_URL"])  # the port included
    assert settings["SMSGW_DATABASE_URL"].startswith("sqlite:////var/lib/smsgw/")  # the state directory
    # What sh reads from it (smsgw-admin sources it) is what the file says.
    shown = subprocess.run(["sh", "-c", f"set -a; . {SYSTEMD / 'smsgw.env'}; set +a; env"],
                           env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=True).stdout
    for name, value in lines:
        assert f"{name}={value}" in shown.splitlines()


# --- nginx from a prefix of its own -------------------------------------------------

needs_nginx = pytest.mark.skipif(NGINX is None and not services_required(),
                                 reason="nginx is not installed (make install installs it)")
# Where Debian's nginx writes by default (its compiled-in log, temp, pid and lock paths).
NGINX_DEFAULT_PLACES = [Path("/var/log/nginx"), Path("/var/lib/nginx"), Path("/run")]


def snapshot(roots: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots`` (symlinks not followed), with its mtime and size."""
    state = {}
    for root in roots:
        if not root.exists():
            continue
        for folder, folders, files in os.walk(root):
            for name in [".", *folders, *files]:
                path = os.path.normpath(os.path.join(folder, name))
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    continue
                state[path] = (info.st_mtime_ns, info.st_size)
    return state


def open_files(pid: int) -> list[str]:
    """The paths of the files the process holds open (sockets, pipes and anonymous files left out)."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("/"):
            paths.append(target)
    return paths


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@needs_nginx
@pytest.mark.parametrize("template", ["smsgw.conf", "smsgw-guard-proxy.conf"])
def test_the_rendered_config_writes_nothing_outside_its_prefix(tmp_path, template):
    """Rendered with the documented names only (LOG_DIR, CACHE_DIR, ... under the
    prefix) and run with ``nginx -p PREFIX -e PREFIX/...``: logs, cached guard answers,
    temp files and the pid file stay in the prefix, and Debian's own places are untouched."""
    before = snapshot(NGINX_DEFAULT_PLACES)
    prefix = tmp_path / "nginx"
    with nginx_before_stubs(prefix, template) as front:
        url = front["nginx"].url
        for path in ("/webhooks/jasmin/7/dlr?token=t-1", "/api/sms-gateways/7/dlr?token=t-2", "/api/sms-gateways",
                     "/healthz", "/nowhere"):
            httpx.post(url + path, data={"id": "x"}, verify=False)
        master = front["nginx"].process.popen.pid
        workers = children(master)
        assert workers, "nginx has no worker process"
        for pid in (master, *workers):
            for path in open_files(pid):
                assert path.startswith(str(prefix) + "/") or path.startswith("/dev/"), f"nginx holds {path} open"
    after = snapshot(NGINX_DEFAULT_PLACES)
    changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    assert changed == [], f"written outside the prefix: {changed}"
    # ... and what it wrote is where the render put it
    written = {path.relative_to(prefix).as_posix() for path in prefix.rglob("*") if path.is_file()}
    assert "logs/smsgw-access.log" in written
    assert "/webhooks/jasmin/7/dlr HTTP/1.1" in (prefix / "logs" / "smsgw-access.log").read_text()
    if template == "smsgw.conf":
        assert any(name.startswith("guard-cache/") for name in written), "the guard's answers were not cached"


def test_render_uses_the_documented_defaults_and_nothing_else_changes(tmp_path):
    """Rendered without values, a template says what its top says it will: the defaults;
    and a value given replaces its placeholder everywhere, and nothing more."""
    for template in ("smsgw.conf", "smsgw-guard-proxy.conf"):
        shipped = (DEPLOY / template).read_text()
        defaults = dict(re.findall(r"^#   @([A-Z_]+)@ += +(\S+)", shipped, re.MULTILINE))
        assert {"LISTEN", "CERTIFICATE", "CERTIFICATE_KEY", "LOG_DIR", "API", "GUARD"} <= set(defaults)
        plain = render(template)
        assert not re.search(r"@[A-Z][A-Z_]*@", plain)
        assert "listen 8443 ssl;" in plain and "server 127.0.0.1:8000;" in plain
        chosen = render(template, LOG_DIR="/srv/logs", API="10.0.0.11:8000 10.0.0.12:8000")
        assert "/var/log/nginx" not in "\n".join(l for l in chosen.splitlines() if not l.startswith("#"))
        assert "access_log /srv/logs/smsgw-access.log smsgw_safe;" in chosen
        assert "    server 10.0.0.11:8000;\n    server 10.0.0.12:8000;\n" in chosen
        # the same file but for those lines
        assert len(chosen.splitlines()) == len(plain.splitlines()) + 1
    refused = subprocess.run([str(DEPLOY / "render"), "smsgw-guard-proxy.conf", "CACHE_DIR=/x"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "CACHE_DIR is not a placeholder" in refused.stderr


# --- a receipt over TLS, as a gateway sends it ---------------------------------------

CURL = shutil.which("curl")


@needs_nginx
@pytest.mark.skipif(CURL is None and not services_required(), reason="curl is not installed")
def test_a_receipt_reaches_smsgw_over_tls_from_a_private_ca(tmp_path):
    """deploy/nginx/private-ca makes the certificate; nginx serves it (rendered with
    CERTIFICATE and CERTIFICATE_KEY); SMSGW_PUBLIC_URL names nginx with its port; the
    gateway is told that address, and a client trusting the CA (curl --cacert, as a
    gateway host trusting it in its CA store) posts the receipt there."""
    ssl_dir = tmp_path / "ssl"
    made = subprocess.run([str(DEPLOY / "private-ca"), str(ssl_dir), "localhost"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    port = free_port()
    public = f"https://localhost:{port}"
    with contextlib.ExitStack() as started:
        api = start_api(tmp_path, SMSGW_PUBLIC_URL=public)
        started.callback(api.process.stop)
        guard = start_guard(tmp_path, api.env, api.url, SMSGW_GUARD_TRUSTED_PROXIES="127.0.0.1")
        started.callback(guard.process.stop)
        nginx = start_nginx(tmp_path / "nginx", "smsgw.conf", int(api.url.rsplit(":", 1)[1]), guard.port,
                            certificate=(ssl_dir / "fullchain.pem", ssl_dir / "privkey.pem"), port=port)
        started.callback(nginx.process.stop)
        stub = StubGateway().start()
        started.callback(stub.stop)
        key = run_smsgw(api.env, "apikey", "create", "--name", "ops").stdout.strip().splitlines()[-1]
        ca = ssl_dir / "ca.crt"
        client = started.enter_context(
            httpx.Client(base_url=public, verify=ssl.create_default_context(cafile=str(ca)), headers={"Authorization": f"Bearer {key}"}))
        gateway = client.post("/api/sms-gateways", json={
            "name": "jasmin", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "default_sender_id": "X"}).json()["data"]
        stub.answer(200, {"data": 'Success "tls-1'})
        message = client.post(f"/api/sms-gateways/{gateway['id']}/send",
                              json={"to_number": "+14155550101", "message": "m"}).json()["data"]
        # What smsgw tells the gateway: nginx's public address, port included.
        dlr_url = stub.received[-1].json()["dlr-url"]
        assert dlr_url == f"{public}/webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']}"

        receipt = [CURL or "curl", "-sS", "-X", "POST", dlr_url, "-d", "id=tls-1&level=2&message_status=DELIVRD"]
        untrusted = subprocess.run(receipt, capture_output=True, text=True, timeout=60)
        assert untrusted.returncode == 60, untrusted  # curl: the peer's certificate is not trusted
        assert client.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "submitted"
        trusted = subprocess.run([*receipt, "--cacert", str(ca)], capture_output=True, text=True, timeout=60)
        assert trusted.returncode == 0, trusted.stderr
        assert trusted.stdout.replace(" ", "") == '{"message":"DLRreceived"}'
        assert client.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "delivrd"

        # The README's step 6 as written, but for the operator's own choices (host name,
        # CA path), and smsgw-admin, which runs smsgw as the user smsgw, here as ourselves.
        step = readme_block("**6. The first API key")
        for written, here in (("https://sms.example.com:8443", public), ("/etc/ssl/smsgw/ca.crt", str(ca))):
            assert written in step
            step = step.replace(written, here)
        shell = f'smsgw-admin() {{ "{sys.executable}" -m api.cli "$@"; }}\nset -e\n{step}'
        ran = subprocess.run(["bash", "-c", shell], env=api.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().splitlines()[-1].replace(" ", "") == '{"message":"DLRreceived"}'
        assert gateway["callback_token"] not in nginx.logs()


# --- smsgw inside the units' sandbox ------------------------------------------------

def sandboxed(unit: str) -> tuple[str, ...]:
    """A command prefix that runs what follows in ``unit``'s system-call sandbox
    (tests/systemd_sandbox.py: its SystemCallFilter=, MemoryDenyWriteExecute=,
    RestrictAddressFamilies= and NoNewPrivileges=, as systemd builds them)."""
    return (sys.executable, "-m", "tests.systemd_sandbox", str(SYSTEMD / unit), "--")


@needs_systemd_analyze
def test_the_sandbox_is_real():
    """What the units forbid fails under tests/systemd_sandbox.py, so the test below means something."""
    probe = ("import mmap, os, socket\n"
             "for attempt in (lambda: mmap.mmap(-1, 4096, prot=7), lambda: socket.socket(socket.AF_PACKET, 3),\n"
             "                lambda: socket.socket(socket.AF_NETLINK, 2), lambda: os.chroot('/')):\n"
             "    try:\n"
             "        attempt(); print('allowed')\n"
             "    except OSError as e:\n"
             "        print(e.errno)\n")
    result = subprocess.run([*sandboxed("smsgw-api.service"), sys.executable, "-c", probe],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "97", "97", "1"]  # EPERM, EAFNOSUPPORT x2, EPERM


@needs_systemd_analyze
def test_smsgw_works_inside_the_units_sandbox(database, tmp_path):
    """`smsgw migrate`, `smsgw api` and `smsgw guard` in their units' sandboxes (no memory
    both writable and executable, @system-service calls only, AF_UNIX/INET/INET6 only):
    a gateway's password sealed with AES-GCM, a send through aiohttp, a receipt through
    the guard's mitmproxy, on each database."""
    from api import secrets
    from tests.servers import SMSGW, healthy, start, wait_for_start

    port = free_port()
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'smsgw.db'}", "SMSGW_API_HOST": "127.0.0.1",
           "SMSGW_API_PORT": str(port), "SMSGW_SECRET_KEY": secrets.generate_key(), "SMSGW_LOG_FORMAT": "json",
           "SMSGW_METRICS_PORT": "0", **database}
    migrated = subprocess.run([*sandboxed("smsgw-api.service"), *SMSGW, "migrate"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    with contextlib.ExitStack() as started:
        api = start(env, [*sandboxed("smsgw-api.service"), *SMSGW, "api"], tmp_path / "api.log")
        started.callback(api.stop)
        url = f"http://127.0.0.1:{port}"
        wait_for_start(api, lambda: healthy(url + "/healthz"), "the API in its sandbox")
        guard = start_guard(tmp_path, env, url, prefix=sandboxed("smsgw-guard.service"))
        started.callback(guard.process.stop)
        stub = StubGateway().start()
        started.callback(stub.stop)
        key = run_smsgw(env, "apikey", "create", "--name", "sandbox").stdout.strip().splitlines()[-1]
        client = started.enter_context(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}))
        gateway = client.post("/api/sms-gateways", json={
            "name": "sandboxed", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "username": "u", "password": "sealed-password", "default_sender_id": "X"}).json()["data"]
        stub.answer(200, {"data": 'Success "sandbox-1'})
        sent = client.post(f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": "+14155550101",
                                                                        "message": "m"})
        assert sent.status_code == 201, sent.text
        # the password, sealed at rest, unsealed to authenticate the send
        assert stub.received[-1].headers["Authorization"] == "Basic " + base64.b64encode(b"u:sealed-password").decode()
        receipt = httpx.post(f"{guard.url}/webhooks/jasmin/{gateway['id']}/dlr",
                             params={"token": gateway["callback_token"]},
                             data={"id": "sandbox-1", "message_status": "DELIVRD"})
        assert receipt.status_code == 200, receipt.text
        message = client.get(f"/api/sms-messages/{sent.json()['data']['id']}").json()["data"]
        assert message["delivery_status"] == "delivrd"
        for log in (api.log(), guard.log):
            assert "Operation not permitted" not in log and "Traceback" not in log



# --- what `pip install /usr/local/src/smsgw` installs ---------------------------------

def test_the_package_built_from_the_checkout_holds_every_file_of_smsgw(tmp_path):
    """The tests run from an editable install, which reads the checkout; a deployment
    installs a built package. Every file git tracks under api/, guard/ and simulator/
    (migrations, templates, assets) must be in it, or the installed smsgw lacks it."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("smsgw-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "api", "guard", "simulator"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert "api/migrations/versions/0001_initial.py" in tracked
    assert sorted(set(tracked) - packaged) == []


# --- the README's "Deployment" section ----------------------------------------------

def deployment_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Deployment\n")
    return text[start:text.index("\n## ", start + 1)]


def readme_block(step: str) -> str:
    """The first ```sh block after ``step`` in the "Deployment" section."""
    section = deployment_section()
    after = section[section.index(step):]
    return after.partition("```sh\n")[2].partition("```")[0]


def test_the_deployment_section_names_only_shipped_files_and_real_commands():
    section = deployment_section()
    shipped = set(re.findall(r"/usr/local/src/smsgw/(deploy/[\w./-]+)", section))
    assert {"deploy/systemd/smsgw.env", "deploy/systemd/smsgw-api.service", "deploy/systemd/smsgw-guard.service",
            "deploy/systemd/smsgw-admin", "deploy/nginx/render", "deploy/nginx/private-ca"} <= shipped
    for path in shipped:
        assert (ROOT / path).exists(), path
    commands = set(re.findall(r"(?:smsgw-admin|/opt/smsgw/bin/smsgw) ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", section))
    assert {"apikey create", "audit verify", "secrets generate-key", "secrets rotate-key"} <= commands
    for command in commands:
        shown = run_smsgw(dict(os.environ), *command.split(), "--help", check=False)
        assert shown.returncode == 0, f"smsgw {command}: {shown.stderr}"
    assert "systemctl enable --now smsgw-api smsgw-guard" in section


def test_the_settings_steps_work_as_written(tmp_path):
    """Step 2's sed lines, run on a copy of the shipped smsgw.env (the install prefix
    substituted, as for the units), leave settings smsgw accepts: a secret key, and
    the public URL with its port."""
    env_file = tmp_path / "smsgw.env"
    shutil.copy(SYSTEMD / "smsgw.env", env_file)
    steps = [line for line in deployment_section().splitlines() if line.startswith("sed -i \"s|^SMSGW_")]
    assert len(steps) == 2
    for step in steps:
        step = step.replace("/etc/smsgw/smsgw.env", str(env_file)).replace(PREFIX, sys.prefix)
        subprocess.run(["sh", "-c", step], check=True, timeout=60)
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")
    settings = config.Settings.from_env(values)
    assert settings.keyring.current is not None
    assert settings.public_url == "https://sms.example.com:8443"


def test_render_to_a_file_replaces_it_only_when_the_render_succeeds(tmp_path):
    """``render -o`` is how the README installs the site: a failed render (a typo in a
    name) must leave the working site in place, never an empty one for the next reload."""
    site = tmp_path / "smsgw.conf"
    render = [str(ROOT / "deploy" / "nginx" / "render"), "-o", str(site), "smsgw.conf"]
    assert subprocess.run([*render, "LISTEN=9443"], capture_output=True).returncode == 0
    working = site.read_text()
    assert "listen 9443 ssl;" in working
    failed = subprocess.run([*render, "LISTN=9444"], capture_output=True, text=True)
    assert failed.returncode == 2 and "LISTN" in failed.stderr
    assert site.read_text() == working and [p.name for p in tmp_path.iterdir()] == ["smsgw.conf"]
