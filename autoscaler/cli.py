"""The `autoscaler` command line. User errors print one line on stderr and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from autoscaler.cli_common import OneLineErrors, fail, run_app
from forecasting.errors import ForecastError
from policies.registry import PolicySpecError
from simulator.errors import SimulatorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predictive autoscaler for ML inference on Kubernetes.")

USER_ERRORS = (SimulatorError, PolicySpecError, ForecastError, ValueError, OSError)


@app.command(cls=OneLineErrors)
def simulate(
    trace: Annotated[Path | None, typer.Option(help="series.csv, an Azure raw CSV or a trace directory")] = None,
    workload: Annotated[str | None, typer.Option(help="built-in workload: diurnal, flash-crowd, llm-bursty")] = None,
    profile: Annotated[str, typer.Option(help="preset name or YAML file")] = "small-model",
    policy: Annotated[list[str] | None, typer.Option(help="name[:key=value,...]; repeatable")] = None,
    slo_ms: Annotated[float | None, typer.Option(help="latency SLO (default: the profile's)")] = None,
    start: Annotated[float, typer.Option(help="replay from this trace time (s); before is history")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="seconds to replay (default: to the end)")] = None,
    rate_scale: Annotated[float, typer.Option(help="multiply the request rate")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of every random draw")] = 0,
    fidelity: Annotated[str | None, typer.Option(help="request | fast (default: request below 20 M requests)")] = None,
    routing: Annotated[str, typer.Option(help="lor (least outstanding) | random | central")] = "lor",
    pod_mtbf_h: Annotated[float | None, typer.Option(help="mean hours between pod failures (default: none)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON")] = None,
    report: Annotated[Path | None, typer.Option(help="write PNG plots and index.html here")] = None,
) -> None:
    """Replay a trace or a built-in workload through each policy and compare them."""
    from rich.console import Console

    from simulator.compare import SimulationRequest, run_comparison
    from simulator.report import table, write_html

    if (trace is None) == (workload is None):
        fail("give exactly one of --trace PATH or --workload NAME")
    try:
        request = SimulationRequest(
            trace=trace, workload=workload, profile=profile, policies=policy or [],
            slo_ms=slo_ms, start_s=start, duration_s=duration, rate_scale=rate_scale,
            seed=seed, fidelity=fidelity, routing=routing, pod_mtbf_h=pod_mtbf_h)
        comparison, capacity_rps = run_comparison(request, progress=sys.stderr.isatty())
    except USER_ERRORS as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    Console(width=None if sys.stdout.isatty() else 160).print(table(comparison))
    if json_path is not None:
        json_path.write_text(json.dumps(comparison.to_json(), indent=2, default=float))
        typer.echo(f"wrote {json_path}")
    if report is not None:
        index = write_html(comparison, capacity_rps, report)
        typer.echo(f"wrote {index}")


@app.command(cls=OneLineErrors)
def backtest(
    trace: Annotated[Path | None, typer.Option(help="series.csv, an Azure raw CSV or a trace directory")] = None,
    workload: Annotated[str | None, typer.Option(help="built-in workload name")] = None,
    model: Annotated[list[str] | None, typer.Option(help="forecaster name; repeatable")] = None,
    horizons_min: Annotated[str, typer.Option(help="comma-separated minutes ahead")] = "1,5,15,60",
    seed: Annotated[int, typer.Option(help="seed of the built-in workload")] = 0,
) -> None:
    """Rolling-origin backtest of forecasters: MASE, pinball loss and q0.9 coverage."""
    from rich.console import Console

    from simulator.backtest_cli import backtest_table, run_backtest

    if (trace is None) == (workload is None):
        fail("give exactly one of --trace PATH or --workload NAME")
    try:
        horizons = [float(h) for h in horizons_min.split(",") if h.strip()]
        if not horizons or any(h <= 0 for h in horizons):
            raise ValueError(f"--horizons-min needs positive minutes, got {horizons_min!r}")
        result = run_backtest(trace=trace, workload=workload, models=model or [],
                              horizons_min=horizons, seed=seed)
    except USER_ERRORS as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    Console(width=None if sys.stdout.isatty() else 160).print(backtest_table(result))


@app.command(cls=OneLineErrors)
def record(
    prometheus: Annotated[str, typer.Option(help="Prometheus base URL, e.g. http://127.0.0.1:9090")],
    query: Annotated[str, typer.Option(help="PromQL rate query returning one series, e.g. sum(rate(x[2m]))")],
    since: Annotated[str, typer.Option(help="how far back from --until: 30m, 6h, 7d")],
    step: Annotated[str, typer.Option(help="trace interval, whole seconds: 15s, 60s, 5m")] = "60s",
    until: Annotated[str, typer.Option(help="end of the window: now or an RFC 3339 time")] = "now",
    fill_gaps: Annotated[str | None, typer.Option(help="fill missing steps: zero | linear (default: fail)")] = None,
) -> None:
    """Export a rate query as a `timestamp_s,requests` trace on stdout, for `simulate --trace`."""
    import io
    import time

    from autoscaler.errors import AutoscalerError
    from autoscaler.record import one_line, parse_duration_s, parse_time_s, rfc3339
    from autoscaler.record import record as record_trace

    now_s = time.time()  # the one clock read; everything below takes it as an argument
    out = io.StringIO()
    try:
        since_s = parse_duration_s(since, "--since")
        step_s = parse_duration_s(step, "--step")
        until_s = parse_time_s(until, now_s, "--until")
        rec = record_trace(out, prometheus, query, since_s=since_s, until_s=until_s,
                           step_s=step_s, fill=fill_gaps)
    except (AutoscalerError, ValueError) as e:
        fail(one_line(e, prometheus))
        return
    sys.stdout.write(out.getvalue())
    typer.echo(f"recorded {len(rec.values_rps)} steps of {step_s} s from {rfc3339(rec.start_s)} "
               f"in {rec.queries} range query(ies)", err=True)


@app.command(cls=OneLineErrors)
def run(
    config: Annotated[Path, typer.Option(help="the YAML configuration (AUTOSCALER_* env overrides it)")],
    standalone: Annotated[bool, typer.Option(help="no Kubernetes: every target dry-run, API on 127.0.0.1")] = False,
    state_dir: Annotated[Path | None, typer.Option(help="standalone state directory [./.autoscaler-state]")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig file [in-cluster config]")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="serve the REST API without authentication (anyone who reaches it may change policies)")] = False,
) -> None:
    """Run the controller and its API until SIGINT/SIGTERM (HTTPS when api_tls_cert_file
    and api_tls_key_file are set)."""
    import logging

    from autoscaler.app import create_app, serve
    from autoscaler.errors import ConfigError
    from autoscaler.service import build_service
    from autoscaler.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config)
        service = build_service(settings, standalone=standalone, state_dir=state_dir,
                                kubeconfig=kubeconfig, insecure_no_auth=insecure_no_auth)
    except (ConfigError, OSError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    service.start()
    try:
        started = serve(create_app(service), settings.api_host, settings.api_port,
                        tls_cert_file=settings.api_tls_cert_file,
                        tls_key_file=settings.api_tls_key_file)
    finally:
        service.shutdown()
    if not started:
        fail(f"could not serve the API on {settings.api_host}:{settings.api_port}")


def _register_api_clients() -> None:
    """`autoscaler policy get|set|history` and `autoscaler whatif`: thin clients of the API."""
    from autoscaler.cli_client import policy_app, whatif

    app.add_typer(policy_app, name="policy")
    app.command(cls=OneLineErrors)(whatif)


_register_api_clients()


def main() -> None:
    """Entry point: usage errors become one line too (no usage box, no traceback)."""
    run_app(app)


if __name__ == "__main__":
    main()
