"""The comparison as a table (rich), a JSON document and an HTML page with PNG plots."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

from simulator.results import Comparison, PolicyResult  # noqa: E402

COLUMNS = ("policy", "SLO attainment", "replica-h", "cost USD", "cost/oracle", "p50 ms", "p95 ms",
           "p99 ms", "cold starts", "scale events", "req per replica-h")


def _row(r: PolicyResult) -> list[str]:
    return [r.policy if r.policy != "oracle" else "oracle (lower bound)",
            f"{100 * r.slo_attainment:.3f} %", f"{r.replica_hours:,.1f}",
            f"{r.replica_hours * r.price_per_replica_hour:,.2f}",
            f"{r.cost_vs_oracle:.3f}", f"{r.p50_ms:,.0f}", f"{r.p95_ms:,.0f}",
            f"{r.p99_ms:,.0f}", f"{r.cold_starts}", f"{r.scale_events}",
            f"{r.requests_per_replica_hour:,.0f}"]


def label(r: PolicyResult) -> str:
    """The policy as the user gave it (name and the parameters set)."""
    return r.label or r.policy


def table(comparison: Comparison) -> Table:
    est = " (latency estimated by the fluid model)" if comparison.fidelity == "fast" else ""
    t = Table(title=f"{comparison.trace} · profile {comparison.profile} · SLO "
                    f"{comparison.slo_ms:g} ms · {comparison.fidelity} fidelity{est}")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c == "policy" else "right")
    rows = list(comparison.results)
    if comparison.oracle not in rows:
        rows.append(comparison.oracle)
    for r in rows:
        cells = _row(r)
        cells[0] = label(r) if r is not comparison.oracle else cells[0]
        t.add_row(*cells)
    return t


def _plot_capacity(r: PolicyResult, capacity_rps: float, path: Path, start_s: float) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.2))
    hours = (r.t_s - start_s) / 3600.0
    ax.plot(hours, r.demand_rps, lw=0.6, color="0.3", label="demand (req/s)")
    ax.step(hours, r.ready * capacity_rps, lw=0.9, where="post", color="tab:green",
            label="ready capacity (req/s)")
    ax.step(hours, r.total * capacity_rps, lw=0.6, where="post", color="tab:orange", alpha=0.7,
            label="billed capacity incl. starting pods")
    if r.policy == "predictive":
        ax.step(hours, r.floor * capacity_rps, lw=0.6, where="post", color="tab:purple",
                alpha=0.7, label="predictive floor")
    ax.set_xlabel("hours since replay start")
    ax.set_ylabel("req/s")
    ax.set_title(f"{r.policy}: demand vs capacity")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cdf(results: list[PolicyResult], slo_ms: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.latency_cdf_ms is None:
            continue
        x, y = r.latency_cdf_ms
        ax.plot(x, y, label=r.policy)
    ax.axvline(slo_ms, color="red", ls="--", lw=0.8, label="SLO")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.001)
    ax.legend(fontsize=8)
    ax.set_title("latency CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_html(comparison: Comparison, capacity_rps: float, out_dir: Path) -> Path:
    """Write PNG plots and index.html into out_dir; returns the index path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(comparison.results)
    if comparison.oracle not in rows:
        rows.append(comparison.oracle)
    images = []
    for i, r in enumerate(rows):
        name = f"capacity-{i}-{r.policy}.png"
        _plot_capacity(r, capacity_rps, out_dir / name, comparison.start_s)
        images.append(name)
    _plot_cdf(rows, comparison.slo_ms, out_dir / "latency-cdf.png")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row(r)) + "</tr>"
                   for r in rows)
    note = (" Latency percentiles are estimated by the fluid model (fast fidelity)."
            if comparison.fidelity == "fast" else "")
    imgs = "".join(f'<figure><img src="{n}" alt="{n}"></figure>' for n in images)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>autoscaler simulate: {html.escape(comparison.trace)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} img{{max-width:100%}}</style>
</head><body>
<h1>Replay of {html.escape(comparison.trace)}</h1>
<p>Profile <b>{html.escape(comparison.profile)}</b>, SLO {comparison.slo_ms:g} ms,
window {comparison.start_s:g} s + {comparison.duration_s:g} s, seed {comparison.seed},
{comparison.fidelity} fidelity.{note} Cost is replica-hours billed from pod creation; cost/oracle
divides it by the oracle's (perfect foresight) replica-hours.</p>
<table><tr>{head}</tr>{body}</table>
<h2>Latency</h2><figure><img src="latency-cdf.png" alt="latency CDF"></figure>
<h2>Demand and capacity</h2>{imgs}
</body></html>"""
    index = out_dir / "index.html"
    index.write_text(page)
    return index


def cdf_points(values_ms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, cumulative share) for a weighted histogram, dropping empty bins."""
    total = weights.sum()
    keep = weights > 0
    if total <= 0 or not keep.any():
        return np.zeros(0), np.zeros(0)
    return values_ms[keep], np.cumsum(weights[keep]) / total
