"""Cost of the per-tick policy sync (PolicySync -> store.list()) at 1,000 targets (issue 3,
Targets; issue 4's policy store).

Run from the project root: `python -m benchmarks.bench_policy_store [--targets N]
[--history H] [--ticks T]`.

What runs: N targets (default 1,000), each with a stored policy and a full history of H
changes (default 200 = HISTORY_LIMIT; each change moves one field, as an API PATCH does),
written in the format the store itself writes (so a compact history shows its effect):
1. FilePolicyStore under a temp directory: the first list() (cold) and T idle list()s.
2. ConfigMapPolicyStore against the project's test API server (tests/kubeserver, real HTTP,
   the controller's token and RBAC): bytes of one full LIST of the policy ConfigMaps, the
   first list() and T idle list()s (after a watch is established, when the store has one).
Each store is measured twice: its list() alone, and PolicySync.sync (what each tick calls:
list() + applying what differs) on a Controller of the N targets (dry run, never ticked, so
no Prometheus is needed). `--full-history` seeds uncompacted entries (full old and new
documents, as stores wrote them before compaction) to measure the cache on such data.
Targets: an idle sync well inside a tick: < 0.5 s per store at N targets (a tick is 15 s and
also has to decide every target).

Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoscaler import policy_store as ps  # noqa: E402
from autoscaler import policy_store_kube as psk  # noqa: E402
from autoscaler.policy_sync import PolicySync  # noqa: E402
from benchmarks.bench_controller import make_controller  # noqa: E402
from benchmarks.common import Scoreboard, machine_line, print_table  # noqa: E402
from tests.kubeserver import BY_KIND, CONTROLLER_TOKEN, KubeServer  # noqa: E402

NAMESPACE = "predictive-autoscaler"
IDLE_LIMIT_S = 0.5
FIELDS = [("quantile", 0.9, 0.95), ("min_replicas", 1, 4), ("surge_margin", 0.2, 0.3)]


def document(i: int) -> dict[str, Any]:
    """A full policy document (the size document_of gives: ~570 bytes)."""
    return {"capacity_rps_per_replica": 100.0 + i % 7, "target_utilization": None,
            "slots_per_replica": 4, "wait_budget_s": 0.1, "max_wait_miss": 0.001,
            "slo_s": None, "slo_part_quantiles_s": [], "service_scv": 1.0, "quantile": 0.95,
            "min_replicas": 1, "max_replicas": 100, "lead_time_s": None,
            "scale_down_window_s": None, "scale_down_window_leads": 2.0,
            "scale_down_max_fraction": 0.1, "surge_margin": 0.2, "surge_confirm_ticks": 2,
            "surge_hold_s": 600.0, "stale_after_s": 120.0, "handback_after_s": 900.0,
            "trend_floor": True, "forecaster": "auto", "mode": "floor", "dry_run": False}


COMPACT = True


def history(i: int, n: int) -> tuple[list[ps.PolicyChange], dict[str, Any]]:
    """n changes as the API records them (old and new full documents), compacted when the
    store compacts; and the final document."""
    compact = getattr(ps, "compact_change", lambda c: c) if COMPACT else (lambda c: c)
    doc = document(i)
    changes = []
    for k in range(n):
        key, a, b = FIELDS[k % len(FIELDS)]
        new = {**doc, key: b if doc[key] == a else a}
        changes.append(compact(ps.PolicyChange(at=ps.utc_stamp(), who=f"token:user-{k % 5}",
                                               action="update", old=doc, new=new)))
        doc = new
    return changes, doc


def names(n: int) -> list[tuple[str, str]]:
    return [(f"team-{i % 20:02d}", f"model-{i:04d}") for i in range(n)]


def seed_files(state_dir: Path, n: int, h: int) -> int:
    store = ps.FilePolicyStore(state_dir)
    total = 0
    for i, (namespace, name) in enumerate(names(n)):
        changes, doc = history(i, h)
        content = ps._encode({"namespace": namespace, "name": name, "revision": h,
                              "policy": doc, "paused": False,
                              "history": [c.to_json() for c in changes]})
        (store.dir / store.file_name(namespace, name)).write_bytes(content)
        total += len(content)
    return total


def seed_configmaps(server: KubeServer, n: int, h: int) -> None:
    rtype = BY_KIND["ConfigMap"]
    for i, (namespace, name) in enumerate(names(n)):
        changes, doc = history(i, h)
        server.store.create(rtype, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": psk.configmap_name(namespace, name), "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": psk.MANAGED_BY,
                                    psk.POLICY_LABEL: "true"},
                         "annotations": {psk.TARGET_NAMESPACE_ANNOTATION: namespace,
                                         psk.TARGET_NAME_ANNOTATION: name}},
            "data": {"policy.json": json.dumps(doc, sort_keys=True),
                     "history.json": json.dumps([c.to_json() for c in changes]),
                     "paused": "false"}}, seed=True)


def list_bytes(server: KubeServer) -> int:
    """Bytes of one LIST as the store sends it (label selector), over real HTTP."""
    url = (f"{server.url}/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector="
           f"{psk.POLICY_LABEL}%3Dtrue")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {CONTROLLER_TOKEN}"})
    with urllib.request.urlopen(req) as r:
        return len(r.read())


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def time_store(store: Any, n: int, ticks: int) -> tuple[float, float, float, float]:
    """(first list() s, median idle list() s, first sync s, median idle sync s)."""
    t0 = time.perf_counter()
    got = store.list()
    first_s = time.perf_counter() - t0
    assert len(got) == n, f"listed {len(got)} of {n}"
    wait = getattr(store, "wait_watching", None)
    if wait is not None:
        wait(60.0)
    idle = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        got = store.list()
        idle.append(time.perf_counter() - t0)
        assert len(got) == n
    now_s = 1_000_000.0
    sync = PolicySync(make_controller("http://127.0.0.1:9", names(n), now_s), store,
                      global_dry_run=True)
    t0 = time.perf_counter()
    changed = sync.sync(now_s)
    first_sync_s = time.perf_counter() - t0
    assert len(changed) == n, f"applied {len(changed)} of {n}"
    idle_sync = []
    for k in range(ticks):
        t0 = time.perf_counter()
        assert sync.sync(now_s + 15.0 * (k + 1)) == []
        idle_sync.append(time.perf_counter() - t0)
    return first_s, median(idle), first_sync_s, median(idle_sync)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--history", type=int, default=ps.HISTORY_LIMIT)
    p.add_argument("--ticks", type=int, default=5)
    p.add_argument("--full-history", action="store_true")
    args = p.parse_args(argv)
    global COMPACT
    COMPACT = not args.full_history
    n, h = args.targets, args.history
    board = Scoreboard("bench_policy_store")
    rows = []
    compact = hasattr(ps, "compact_change") and COMPACT

    workdir = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    try:
        size = seed_files(workdir, n, h)
        first_s, idle_s, sync_s, idle_sync_s = time_store(ps.FilePolicyStore(workdir), n,
                                                          args.ticks)
        rows.append(["file", f"{size / 1e6:.1f} MB on disk", f"{first_s:.3f}", f"{idle_s:.4f}",
                     f"{sync_s:.3f}", f"{idle_sync_s:.4f}"])
        board.check(f"file store: idle sync at {n} targets", idle_sync_s < IDLE_LIMIT_S,
                    f"{idle_sync_s:.4f} s", f"{IDLE_LIMIT_S} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    with KubeServer(max_watch_s=300.0) as server:
        seed_configmaps(server, n, h)
        size = list_bytes(server)
        api_client = server.client(CONTROLLER_TOKEN)
        store = psk.ConfigMapPolicyStore(api_client, NAMESPACE)
        try:
            first_s, idle_s, sync_s, idle_sync_s = time_store(store, n, args.ticks)
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
            api_client.close()
        rows.append(["configmap", f"{size / 1e6:.1f} MB per LIST", f"{first_s:.3f}",
                     f"{idle_s:.4f}", f"{sync_s:.3f}", f"{idle_sync_s:.4f}"])
        board.check(f"configmap store: idle sync at {n} targets", idle_sync_s < IDLE_LIMIT_S,
                    f"{idle_sync_s:.4f} s", f"{IDLE_LIMIT_S} s")

    print(f"\npolicy store sync: {n} targets x {h}-entry history "
          f"({'compact' if compact else 'full-document'} history entries)")
    print_table(["store", "size", "first list() s", "idle list() s", "first sync s (all applied)",
                 "idle sync s"], rows)
    print("(idle: median of --ticks calls with nothing changed)")
    print(machine_line())
    return board.finish()


if __name__ == "__main__":
    sys.exit(main())
