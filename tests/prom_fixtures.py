"""Real-Prometheus fixtures: a backfilled one and a scraping one, on 127.0.0.1 only.

Register with `pytest_plugins = ["tests.prom_fixtures"]` in tests/conftest.py.

- `prometheus_backfilled` (session): days 45-47 of the worldcup98 trace (60 s resolution) written
  as an OpenMetrics file, turned into TSDB blocks by `promtool tsdb create-blocks-from
  openmetrics`, served by `prometheus`. The replayed days end about an hour before the wall clock.
  Series: `demo_requests_total{namespace="default",deployment="demo"}` (the trace's cumulative
  count, with a 30-minute hole of missing samples on day 46), the same counter for
  `{namespace="team-b",deployment="demo"}` at twice the trace (no hole), and DCGM-style
  `DCGM_FI_DEV_GPU_UTIL` gauges for the targets' pods plus decoys (another deployment's pod,
  a GPU without a pod).
- `prometheus_scraping` (session): Prometheus scraping, every 1 s, a prometheus-client HTTP
  server in a thread whose `LiveExporter` collector serves counters and GPU gauges the test sets.

Every wait is bounded; processes are terminated and directories removed afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tests.conftest import traces_dir

STEP_S = 60
DAY_S = 86_400
FIRST_DAY, N_DAYS = 45, 3
# Missing samples (a scrape outage) on the second replayed day, trace time [start, end).
HOLE_TRACE_S = (46 * DAY_S + 6 * 3600, 46 * DAY_S + 6 * 3600 + 1800)
POD_A, POD_B = "demo-7c9d8f6b5d-x2k4q", "demo-7c9d8f6b5d-p9z7w"
POD_TEAM_B = "demo-5f6b7c8d9-bdfgh"
POD_OTHER = "other-6d7f8b9c5-qrstv"
READY_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binaries() -> tuple[str, str]:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not tool:
        pytest.fail(
            "prometheus/promtool not found: run scripts/ensure-prometheus.sh "
            "(installs the Debian package `prometheus`)"
        )
    return prom, tool


class RunningPrometheus:
    """A prometheus process on a free loopback port, with its own storage directory."""

    def __init__(self, workdir: Path, config: str, retention: str = "3650d") -> None:
        prom, _ = _binaries()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config)
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                prom,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"prometheus not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def http_requests(self, handler: str) -> float:
        """Prometheus' own count of HTTP requests to `handler` (e.g. /api/v1/query_range)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("prometheus_http_requests_total{") and (
                f'handler="{handler}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


# -- backfilled ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfilledPrometheus:
    """A running backfilled Prometheus and the mapping from trace time to Prometheus time.

    Trace interval starting at trace time tau (seconds, series.csv `timestamp_s`) maps to
    Prometheus time tau + offset_s; its count is in the counter sample at the interval's END,
    tau + offset_s + step_s. Sample times are therefore = 30 (mod 60) s on the epoch.
    """

    url: str
    server: RunningPrometheus
    step_s: int
    offset_s: int
    trace_s: np.ndarray  # trace interval starts, seconds (days 45-47)
    requests: np.ndarray  # requests per interval, from series.csv
    sample_s: np.ndarray  # Prometheus time of each interval's counter sample
    kept: np.ndarray  # False where the default/demo samples were dropped (the hole)
    gpu_pct: np.ndarray  # DCGM util of POD_A per sample; POD_B has half of it

    def trace_to_prom(self, trace_s: float) -> float:
        return trace_s + self.offset_s

    def prom_to_trace(self, prom_s: float) -> float:
        return prom_s - self.offset_s

    @property
    def hole_sample_s(self) -> tuple[float, float]:
        """First and last dropped sample times."""
        dropped = self.sample_s[~self.kept]
        return float(dropped[0]), float(dropped[-1])

    @property
    def last_sample_s(self) -> float:
        return float(self.sample_s[-1])


def load_trace_days(first_day: int, n_days: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(interval starts, requests, requests before the first day) of worldcup98."""
    path = traces_dir() / "worldcup98" / "series.csv"
    if not path.is_file():
        pytest.fail(f"trace not found: {path} (set AUTOSCALER_TRACES_DIR)")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    t, r = data[:, 0], data[:, 1]
    sel = (t >= first_day * DAY_S) & (t < (first_day + n_days) * DAY_S)
    return t[sel], r[sel], int(r[t < first_day * DAY_S].sum())


def _om_series(name: str, labels: str, values: np.ndarray, times: np.ndarray) -> list[str]:
    return [
        f"{name}{{{labels}}} {float(v)!r} {int(ts)}" for v, ts in zip(values, times, strict=True)
    ]


def write_openmetrics(
    path: Path,
    requests: np.ndarray,
    sample_s: np.ndarray,
    kept: np.ndarray,
    gpu_pct: np.ndarray,
    base_count: int,
) -> None:
    """The fixture's series as an OpenMetrics file (each series contiguous, `# EOF` last)."""
    counts = base_count + np.cumsum(requests)
    gpu_other = np.full(len(sample_s), 50.0)
    k = kept

    lines = ["# HELP demo_requests Requests served.", "# TYPE demo_requests counter"]
    lines += _om_series(
        "demo_requests_total", 'namespace="default",deployment="demo"', counts[k], sample_s[k]
    )
    lines += _om_series(
        "demo_requests_total", 'namespace="team-b",deployment="demo"', 2 * counts, sample_s
    )
    lines += [
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    ]
    gpu = 'gpu="{g}",Hostname="node-1",namespace="{ns}",pod="{pod}"'
    lines += _om_series(
        "DCGM_FI_DEV_GPU_UTIL", gpu.format(g=0, ns="default", pod=POD_A), gpu_pct[k], sample_s[k]
    )
    lines += _om_series(
        "DCGM_FI_DEV_GPU_UTIL",
        gpu.format(g=1, ns="default", pod=POD_B),
        gpu_pct[k] / 2,
        sample_s[k],
    )
    lines += _om_series(
        "DCGM_FI_DEV_GPU_UTIL", gpu.format(g=2, ns="default", pod=POD_OTHER), gpu_other, sample_s
    )
    lines += _om_series(
        "DCGM_FI_DEV_GPU_UTIL", 'gpu="3",Hostname="node-1"', gpu_other + 49, sample_s
    )
    lines += _om_series(
        "DCGM_FI_DEV_GPU_UTIL", gpu.format(g=0, ns="team-b", pod=POD_TEAM_B), gpu_pct, sample_s
    )
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def prometheus_backfilled() -> Iterator[BackfilledPrometheus]:
    _, promtool = _binaries()
    trace_s, requests, base = load_trace_days(FIRST_DAY, N_DAYS)
    # Last sample about an hour before now, on :30 of a minute (so 60 s evaluation grids
    # fall halfway between samples).
    last_sample = (int(time.time()) // STEP_S) * STEP_S - 3600 + 30
    offset = last_sample - STEP_S - int(trace_s[-1])
    sample_s = trace_s + offset + STEP_S
    kept = ~((trace_s >= HOLE_TRACE_S[0]) & (trace_s < HOLE_TRACE_S[1]))
    gpu_pct = np.round(np.minimum(100.0, 100.0 * requests / requests.max()), 1)
    workdir = Path(tempfile.mkdtemp(prefix="prom-backfill-"))
    try:
        om = workdir / "trace.om"
        write_openmetrics(om, requests, sample_s, kept, gpu_pct, base)
        (workdir / "data").mkdir()
        done = subprocess.run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "-q",
                str(om),
                str(workdir / "data"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"promtool backfill failed: {done.stderr[-2000:]}")
        server = RunningPrometheus(workdir, "global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        try:
            yield BackfilledPrometheus(
                server.url, server, STEP_S, offset, trace_s, requests, sample_s, kept, gpu_pct
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- scraping --------------------------------------------------------------------------------


class LiveExporter:
    """A prometheus-client collector serving what the test sets: request counters per
    (namespace, deployment) and DCGM-style GPU gauges per (namespace, pod)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], float] = {}
        self._gpu: dict[tuple[str, str], float] = {}

    def inc(self, namespace: str, deployment: str, n: float = 1.0) -> None:
        with self._lock:
            key = (namespace, deployment)
            self._counters[key] = self._counters.get(key, 0.0) + n

    def inc_many(self, increments: dict[tuple[str, str], float]) -> None:
        """Several counters at once: a scrape sees all of them or none."""
        with self._lock:
            for key, n in increments.items():
                self._counters[key] = self._counters.get(key, 0.0) + n

    def reset(self, namespace: str, deployment: str) -> None:
        """As if the server restarted: the counter starts again from 0."""
        with self._lock:
            self._counters[(namespace, deployment)] = 0.0

    def remove(self, namespace: str, deployment: str) -> None:
        """The series disappears from the exposition (Prometheus marks it stale)."""
        with self._lock:
            self._counters.pop((namespace, deployment), None)

    def set_gpu(self, namespace: str, pod: str, pct: float) -> None:
        with self._lock:
            self._gpu[(namespace, pod)] = pct

    def collect(self):
        with self._lock:
            counters, gpu = dict(self._counters), dict(self._gpu)
        c = CounterMetricFamily(
            "demo_requests", "Requests served.", labels=["namespace", "deployment"]
        )
        for (ns, dep), v in counters.items():
            c.add_metric([ns, dep], v)
        yield c
        g = GaugeMetricFamily(
            "DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=["namespace", "pod"]
        )
        for (ns, pod), v in gpu.items():
            g.add_metric([ns, pod], v)
        yield g


@dataclass(frozen=True)
class ScrapingPrometheus:
    """A Prometheus scraping `exporter` every `scrape_interval_s` seconds."""

    url: str
    server: RunningPrometheus
    exporter: LiveExporter
    exporter_url: str
    scrape_interval_s: float

    def query(self, promql: str) -> list[dict]:
        """Raw instant query at the server's now (for waiting on scrapes)."""
        import json
        import urllib.parse

        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    def wait_until(self, promql: str, predicate, timeout_s: float = 15.0) -> list[dict]:
        """Poll `promql` until predicate(result) holds; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.2)
        pytest.fail(f"timed out after {timeout_s}s waiting on {promql!r}; last result {result}")


@pytest.fixture(scope="session")
def prometheus_scraping() -> Iterator[ScrapingPrometheus]:
    exporter = LiveExporter()
    registry = CollectorRegistry()
    registry.register(exporter)
    port = _free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    workdir = Path(tempfile.mkdtemp(prefix="prom-scrape-"))
    config = (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: exporter\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    try:
        server = RunningPrometheus(workdir, config, retention="1d")
        try:
            yield ScrapingPrometheus(server.url, server, exporter, f"http://127.0.0.1:{port}", 1.0)
        finally:
            server.stop()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
