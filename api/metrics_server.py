"""The API's /metrics listener: a port of its own (``SMSGW_METRICS_HOST``/``_PORT``,
127.0.0.1:9180 by default, 0 turns it off), never behind nginx.

It runs in the ``smsgw api`` process that uvicorn's workers are children of.
With several workers each writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and the
listener adds them up: counters and histograms over every worker that ever
ran (a worker that died and was replaced still counts what it did), gauges
marked ``livesum`` over the live ones only (a dead worker's file is dropped at
the next scrape). The directory is a fresh temporary one, removed at exit,
unless the operator names one (e.g. on a read-only /tmp): its old files are
removed at start, since they would be added to this run's.

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported,
so ``Listener`` is made before anything imports ``api.metrics``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("smsgw.metrics")


class ListenerFailed(Exception):
    """The port could not be listened on; the message names it and its variable."""


def listen(registry, host: str, port: int, variable: str):
    """Serve ``registry`` on host:port in a thread of its own; the server (``shutdown()`` stops it).
    A port that cannot be had stops start-up: an operator must not run blind."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(port, host, registry)
    except OSError as exc:
        raise ListenerFailed(
            f"cannot serve metrics on {host}:{port} ({variable}): {exc.strerror or exc}. "
            f"Set {variable} to a free port, or to 0 to turn the metrics off") from None
    log.info("metrics on http://%s:%d/metrics (%s)", host, server.server_port, variable)
    return server


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_dead(path: str) -> list[int]:
    """Drop the live gauges' files of processes that are gone (``mark_process_dead``); their pids."""
    from prometheus_client import multiprocess

    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(name)[:-3].rsplit("_", 1)[1]
        if pid.isdigit() and not alive(int(pid)):
            dead.add(int(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


class Workers:
    """Every worker's values, added up from their files; dead workers' live gauges dropped first."""

    def __init__(self, path: str):
        from prometheus_client import multiprocess

        self.path = path
        self.files = multiprocess.MultiProcessCollector(None, path)

    def collect(self):
        forget_dead(self.path)
        return self.files.collect()


class ThisProcess:
    """One process: its own metrics (prometheus_client's default registry, with the
    process_* and python_* ones)."""

    def collect(self):
        from prometheus_client import REGISTRY

        return REGISTRY.collect()


class Listener:
    def __init__(self, settings, workers: int):
        """Made before ``api.metrics`` is imported: with several workers (or a directory
        the operator named), the directory every process will write its values to."""
        self.settings = settings
        self.server = None
        self.made_dir = False
        self.path = os.environ.get(MULTIPROC_DIR) or None
        if self.path is not None:  # the operator's: every process writes there, whether it is served or not
            os.makedirs(self.path, exist_ok=True)
            for name in glob.glob(os.path.join(self.path, "*.db")):
                os.remove(name)
        elif workers > 1 and settings.metrics_port != 0:
            self.path = os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="smsgw-metrics-")
            self.made_dir = True

    def start(self) -> None:
        """Listen (raises ``ListenerFailed``); nothing when SMSGW_METRICS_PORT is 0."""
        if self.settings.metrics_port == 0:
            return
        from prometheus_client import CollectorRegistry

        from api.metrics_gauges import DatabaseGauges

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Workers(self.path) if self.path else ThisProcess())
        registry.register(DatabaseGauges(self.settings.database_url))
        self.server = listen(registry, self.settings.metrics_host, self.settings.metrics_port, "SMSGW_METRICS_PORT")

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.made_dir:
            shutil.rmtree(self.path, ignore_errors=True)
