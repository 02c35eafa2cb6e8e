"""`autoscaler run --standalone` as a real process: a policy changed over HTTP survives a
restart of the process; HTTPS with a certificate; no token configured -> it refuses to start.
Every wait is bounded; the processes are stopped with SIGTERM (killed if they hang).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.process_support import reaped, stop

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT_ROOT / "examples" / "standalone.yaml"
WRITE = "process-write-token-0123"
DEMO = "/targets/default/demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCALER_")}
    env.update(extra)
    return env


def call(url: str, method: str = "GET", body: dict | None = None,
         headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {WRITE}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


@contextmanager
def running(env: dict[str, str], state_dir: Path, base: str,
            context: ssl.SSLContext | None = None, extra: tuple[str, ...] = ()):
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoscaler.cli", "run", "--standalone", "--config",
         str(EXAMPLE), "--state-dir", str(state_dir), *extra],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "the API did not answer within 30 s"
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1, context=context):
                    break
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        yield proc
        out = stop(proc, 15)
        assert proc.returncode == 0, out[-2000:]


def test_policy_survives_a_new_process(prometheus_scraping, tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(AUTOSCALER_PROMETHEUS_URL=prometheus_scraping.url,
                  AUTOSCALER_API_PORT=str(port), AUTOSCALER_API_TOKENS=f"{WRITE}:write")
    state = tmp_path / "state"
    with running(env, state, base):
        status, headers, _ = call(f"{base}{DEMO}/policy")
        assert status == 200
        status, headers, doc = call(
            f"{base}{DEMO}/policy", "PATCH", {"min_replicas": 3, "quantile": 0.9},
            {"If-Match": headers["etag"], "Content-Type": "application/merge-patch+json"})
        assert status == 200, doc
        etag = headers["etag"]
    with running(env, state, base):
        status, headers, again = call(f"{base}{DEMO}/policy")
        _, _, history = call(f"{base}{DEMO}/policy/history")
    assert status == 200
    assert again == doc and headers["etag"] == etag
    assert again["min_replicas"] == 3 and again["quantile"] == 0.9
    assert [c["action"] for c in history["changes"]] == ["update"]


def test_serves_https_with_a_configured_certificate(prometheus_scraping, tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    env = cli_env(AUTOSCALER_PROMETHEUS_URL=prometheus_scraping.url,
                  AUTOSCALER_API_PORT=str(port), AUTOSCALER_API_TOKENS=f"{WRITE}:write",
                  AUTOSCALER_API_TLS_CERT_FILE=str(cert_file),
                  AUTOSCALER_API_TLS_KEY_FILE=str(key_file))
    with running(env, tmp_path / "state", base, context):
        status, _, targets = call(f"{base}/targets", context=context)
        assert status == 200 and targets[0]["name"] == "demo"
        with pytest.raises((OSError, http.client.HTTPException)):  # no plain HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_refuses_to_start_without_a_token(prometheus_scraping, tmp_path) -> None:
    env = cli_env(AUTOSCALER_PROMETHEUS_URL=prometheus_scraping.url,
                  AUTOSCALER_API_PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "run", "--standalone", "--config",
         str(EXAMPLE), "--state-dir", str(tmp_path / "state")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "no API token configured" in lines[-1]
    assert "--insecure-no-auth" in lines[-1]


def test_insecure_no_auth_serves_without_a_token(prometheus_scraping, tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(AUTOSCALER_PROMETHEUS_URL=prometheus_scraping.url,
                  AUTOSCALER_API_PORT=str(port))
    with running(env, tmp_path / "state", base, extra=("--insecure-no-auth",)), \
            urllib.request.urlopen(f"{base}/targets", timeout=10) as r:
        assert r.status == 200
