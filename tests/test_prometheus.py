"""A real Prometheus (Debian's package) scraping a running stack with the shipped scrape config.

The config is deploy/prometheus/prometheus.yml with only its targets (and the interval,
so the test need not wait 15 s) changed; Prometheus runs on a free port with a storage
directory of its own, and answers a PromQL query for the receipts the stack stored
over its HTTP API, as a dashboard or an alert would ask it.
"""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from tests.metrics_stack import make_traffic, start_stack
from tests.servers import ROOT, free_port, services_required, start, wait_for_start, wait_until

PROMETHEUS = shutil.which("prometheus")
SHIPPED = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "smsgw.json"


def readme_queries() -> list[str]:
    """The PromQL lines of the README's metrics section (comments left out)."""
    section = (ROOT / "README.md").read_text().split("### Metrics", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```promql\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def dashboard_queries() -> list[str]:
    """The Grafana dashboard's queries, with Grafana's own rate interval written out."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$__rate_interval", "1m") for panel in panels for t in panel["targets"]]


@pytest.fixture
def prometheus_binary() -> str:
    if PROMETHEUS is None:
        if services_required():
            pytest.fail("prometheus is required (SMSGW_REQUIRE_SERVICES=1) but not installed: make install "
                        "(scripts/install-system-packages) installs Debian's package")
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    return PROMETHEUS


def query(url: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=30).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def replace_each(text: str, replacements: dict[str, str]) -> str:
    """The shipped scrape config with test ports; each line replaced must be there, or the
    shipped file changed under the test."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in {SHIPPED.name}"
        text = text.replace(old, new)
    return text


def test_prometheus_scrapes_the_stack_and_answers_for_receipts(prometheus_binary, tmp_path):
    stack = start_stack(tmp_path, {})
    try:
        traffic = make_traffic(stack)
        config = replace_each(SHIPPED.read_text(), {
            "127.0.0.1:9180": f"127.0.0.1:{stack.api_metrics}",
            "127.0.0.1:9181": f"127.0.0.1:{stack.guard_metrics}",
            "scrape_interval: 15s": "scrape_interval: 1s",
        })
        (tmp_path / "prometheus.yml").write_text(config)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start({"PATH": "/usr/bin:/bin"}, [
            prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        ], tmp_path / "prometheus.log")
        try:
            wait_for_start(process, lambda: _ready(url), "Prometheus")
            receipts = 'sum(smsgw_receipts_total{gateway="%d", outcome="parked"})' % stack.good["id"]
            wait_until(lambda: bool(query(url, receipts)), timeout=60, what="a scrape with the receipts in it")
            assert float(query(url, receipts)[0]["value"][1]) == traffic.parked
            wait_until(lambda: {r["metric"]["job"]: r["value"][1] for r in query(url, 'up{job=~"smsgw-.*"}')} == {
                "smsgw-api": "1", "smsgw-guard": "1"}, timeout=60, what="both targets scraped and up")
            refused = query(url, 'smsgw_guard_refused_total{reason="forbidden"}')
            assert float(refused[0]["value"][1]) == traffic.guard_forbidden
            # what the README and the dashboard ask Prometheus is PromQL it accepts (query checks)
            assert len(readme_queries()) >= 4 and len(dashboard_queries()) >= 15
            for promql in readme_queries() + dashboard_queries():
                query(url, promql)
            by_outcome = readme_queries()[0].replace("5m", "1m")  # a rate needs two scrapes in its window
            wait_until(lambda: {r["metric"]["outcome"] for r in query(url, by_outcome)} == {
                "applied", "parked", "ignored"}, timeout=60, what="the README's first query to show each outcome")
        finally:
            process.stop()
    finally:
        stack.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
