"""Running Debian's real nginx with a shipped config, rendered for test ports and paths."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ROOT, Process, free_port, start, wait_until

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
DEPLOY = ROOT / "deploy" / "nginx"


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def render(template: str | Path, **values: str) -> str:
    """``deploy/nginx/render TEMPLATE NAME=VALUE ...``, the documented way to choose the
    ports, upstreams and paths, and the only change the tests make to a shipped config."""
    result = subprocess.run([str(DEPLOY / "render"), str(template), *(f"{k}={v}" for k, v in values.items())],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def placeholders(template: str | Path) -> set[str]:
    """The names a template defines at its top: ``deploy/nginx/render --names TEMPLATE``."""
    result = subprocess.run([str(DEPLOY / "render"), "--names", str(template)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@dataclass
class Nginx:
    url: str
    port: int
    workdir: Path
    process: Process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.workdir / "logs").glob("*.log")))


def start_nginx(workdir: Path, config_name: str, api_port: int, guard_port: int,
                more_api_ports: list[int] = (), certificate: tuple[Path, Path] | None = None,
                port: int | None = None) -> Nginx:
    """Serve ``deploy/nginx/<config_name>`` (or a template at an absolute path), rendered
    for this test's ports and paths under ``workdir``; ``more_api_ports`` adds API replicas
    to the upstream, ``certificate`` (its chain and key) replaces a self-signed one, ``port``
    (a free one by default) is where it listens."""
    assert NGINX, "nginx is not installed (make install installs it)"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    cert, key = certificate or self_signed(workdir)
    port = port or free_port()
    values = {
        "LISTEN": f"127.0.0.1:{port}",
        "API": " ".join(f"127.0.0.1:{p}" for p in (api_port, *more_api_ports)),
        "GUARD": f"127.0.0.1:{guard_port}",
        "CERTIFICATE": str(cert),
        "CERTIFICATE_KEY": str(key),
        "LOG_DIR": f"{workdir}/logs",
        "CACHE_DIR": f"{workdir}/guard-cache",
    }
    (workdir / "smsgw.conf").write_text(render(config_name, **{k: v for k, v in values.items()
                                                               if k in placeholders(config_name)}))
    temp = workdir / "temp"
    (workdir / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/main-error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {workdir}/smsgw.conf;
}}
""")
    temp.mkdir(exist_ok=True)
    args = [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", str(workdir / "logs" / "startup.log")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = start(os.environ.copy(), args, workdir / "nginx.out")

    def listening() -> bool:
        import socket
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return process.popen.poll() is not None

    wait_until(listening, what="nginx to listen")
    assert process.popen.poll() is None, (workdir / "nginx.out").read_text()
    return Nginx(f"https://127.0.0.1:{port}", port, workdir, process)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes
    raw: bytes


def raw_exchange(port: int, request: bytes, tls: bool = True) -> RawAnswer:
    """Write ``request`` byte for byte (over TLS unless ``tls`` is false) and read the
    answer until nginx closes: for malformed request lines, huge URIs, bad versions
    and raw non-ASCII bytes, which no HTTP client library would send."""
    import socket
    import ssl

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return RawAnswer(int(status_line.split()[1]), headers, body, data)


@contextlib.contextmanager
def nginx_stack(workdir: Path, config_name: str, database: dict[str, str] | None = None):
    """The API, the guard and nginx serving ``config_name``, a stub gateway, an API
    client through nginx, and one gateway record pointing at the stub."""
    import httpx

    from tests.servers import StubGateway, run_smsgw, start_api, start_guard

    # Everything started is stopped, even when a later step of the set-up fails:
    # a failed ``apikey create`` must not leave the API, the guard and nginx running.
    with contextlib.ExitStack() as started:
        api = start_api(workdir, **(database or {}))
        started.callback(api.process.stop)
        guard = start_guard(workdir, api.env, api.url)
        started.callback(guard.process.stop)
        nginx = start_nginx(workdir / "nginx", config_name, int(api.url.rsplit(":", 1)[1]), guard.port)
        started.callback(nginx.process.stop)
        key = run_smsgw(api.env, "apikey", "create", "--name", "nginx").stdout.strip().splitlines()[-1]
        stub = StubGateway().start()
        started.callback(stub.stop)
        client = started.enter_context(
            httpx.Client(base_url=nginx.url, verify=False, headers={"Authorization": f"Bearer {key}"}))
        gateway = client.post("/api/sms-gateways", json={
            "name": "behind nginx", "server_host": "127.0.0.1", "server_port": stub.port,
            "api_path": "secure/send", "default_sender_id": "X"}).json()["data"]
        yield {"api": api, "guard": guard, "nginx": nginx, "client": client, "gateway": gateway, "stub": stub,
               "key": key}


def send_message(stack, external_id: str) -> dict:
    """One message sent through nginx, which the stub gateway accepts as ``external_id``."""
    stack["stub"].answer(200, {"data": f'Success "{external_id}'})
    response = stack["client"].post(f"/api/sms-gateways/{stack['gateway']['id']}/send",
                                    json={"to_number": "+14155550101", "message": "m"})
    assert response.status_code == 201, response.text
    return response.json()["data"]


@contextlib.contextmanager
def nginx_before_stubs(workdir: Path, config_name: str):
    """nginx serving ``config_name`` with recording stubs where the API and the guard
    would be: what nginx itself answers, and exactly what it sends upstream.
    The guard stub says yes to everything; the API stub answers 200 JSON."""
    from tests.servers import StubGateway

    with contextlib.ExitStack() as started:
        api, guard = StubGateway().start(), StubGateway().start()
        started.callback(api.stop)
        started.callback(guard.stop)
        api.answer(200, {"message": "stub API"})
        guard.answer(200, {"message": "stub guard"})
        nginx = start_nginx(workdir, config_name, api.port, guard.port)
        started.callback(nginx.process.stop)
        yield {"nginx": nginx, "api": api, "guard": guard}
