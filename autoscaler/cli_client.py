"""`autoscaler policy get|set|history` and `autoscaler whatif`: thin clients of the REST API.

Registered in autoscaler/cli.py with `app.add_typer(policy_app, name="policy")` and
`app.command(cls=OneLineErrors)(whatif)`; `python -m autoscaler.cli_client` runs them alone.

Rules: every failure is ONE line `error: ...` on stderr and exit status 2 (ApiClientError
already carries the HTTP status and the API's reason). `--set key=value` values are JSON when
they parse as JSON (0.99, true, null, [0.2]) and strings otherwise (auto); NaN and Infinity
stay strings because JSON has no such numbers. The table builders below are pure.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from autoscaler.api_client import ApiClient, ApiClientError
from autoscaler.cli_common import OneLineErrors, fail, run_app
from autoscaler.policy_store import differing_fields

POLL_INTERVAL_S = 1.0
COMPARISON_COLUMNS = ("policy", "SLO attainment", "replica-h", "cost USD", "cost/oracle",
                      "p50 ms", "p95 ms", "p99 ms", "cold starts", "scale events",
                      "req per replica-h")
"""The columns of `autoscaler simulate` (simulator.report.COLUMNS; a test keeps them equal)."""
WHATIF_ROLES = ("hpa", "current", "candidate")


# -- pure: arguments -----------------------------------------------------------------------------
def parse_target(text: str) -> tuple[str, str]:
    """NAMESPACE/NAME -> (namespace, name); ValueError otherwise."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"target must be NAMESPACE/NAME, got {text!r}")
    return namespace, name


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN/Infinity: valid in Python's json, not in JSON


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the text."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """--set key=value items -> {key: parsed value}; ValueError on a bad or repeated key."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set needs key=value, got {item!r}")
        if key in out:
            raise ValueError(f"--set {key} given twice")
        out[key] = parse_value(value)
    return out


def with_changes(policy: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The full policy with `changes` applied; null removes the field (back to its default,
    as in a JSON merge patch, since a full document's missing fields take the defaults)."""
    out = dict(policy)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# -- pure: tables --------------------------------------------------------------------------------
def show(value: Any) -> str:
    """A policy value as JSON text (null, true, 0.95, "auto" without quotes)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def policy_table(target: str, policy: Mapping[str, Any], defaults: Mapping[str, Any],
                 etag: str | None = None) -> Table:
    """field / value / built-in default, one row per field of the document (fields away from
    the built-in default marked *; the target's own configured values, which a PUT's missing
    fields and a PATCH's nulls go back to, may differ from the built-in ones)."""
    t = Table(title=f"policy of {target}", caption=f"ETag {etag}" if etag else None)
    for c in ("field", "value", "built-in default"):
        t.add_column(c)
    for key, value in policy.items():
        default = show(defaults[key]) if key in defaults else ""
        changed = key in defaults and value != defaults[key]
        t.add_row(f"{key} *" if changed else key, show(value), default)
    return t


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                   defaults: Mapping[str, Any]) -> list[str]:
    """`field: old -> new` for each field that differs (a missing document = the defaults)."""
    before, after = dict(old or defaults), dict(new or defaults)
    return [f"{key}: {show(before.get(key, defaults.get(key)))} -> "
            f"{show(after.get(key, defaults.get(key)))}"
            for key in differing_fields(before, after, defaults)]


def history_table(target: str, changes: Sequence[Mapping[str, Any]],
                  defaults: Mapping[str, Any]) -> Table:
    """when / who / action / changed fields (old -> new), oldest first."""
    t = Table(title=f"policy history of {target}")
    for c in ("when", "who", "action", "changes"):
        t.add_column(c)
    for change in changes:
        action = str(change.get("action", ""))
        diff = (changed_fields(change.get("old"), change.get("new"), defaults)
                if action not in ("pause", "resume") else [])
        t.add_row(str(change.get("at", "")), str(change.get("who", "")), action,
                  "\n".join(diff))
    return t


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def comparison_row(name: str, r: Mapping[str, Any]) -> list[str]:
    """One result of `simulate --json` formatted as simulator.report._row formats it."""
    slo = r.get("slo_attainment")
    return [name, "n/a" if slo is None else f"{100 * slo:.3f} %",
            _num(r.get("replica_hours"), ",.1f"), _num(r.get("cost_usd"), ",.2f"),
            _num(r.get("cost_vs_oracle"), ".3f"), _num(r.get("p50_ms"), ",.0f"),
            _num(r.get("p95_ms"), ",.0f"), _num(r.get("p99_ms"), ",.0f"),
            str(r.get("cold_starts", "n/a")), str(r.get("scale_events", "n/a")),
            _num(r.get("requests_per_replica_hour"), ",.0f")]


def comparison_table(comparison: Mapping[str, Any], names: Sequence[str] | None = None) -> Table:
    """The `autoscaler simulate` table from its JSON document; names label the rows
    (default: each result's policy)."""
    fidelity = comparison.get("fidelity", "")
    est = " (latency estimated by the fluid model)" if fidelity == "fast" else ""
    t = Table(title=f"{comparison.get('trace', '')} · profile {comparison.get('profile', '')} "
                    f"· SLO {comparison.get('slo_ms', float('nan')):g} ms · {fidelity} "
                    f"fidelity{est}")
    for c in COMPARISON_COLUMNS:
        t.add_column(c, justify="left" if c == "policy" else "right")
    results = list(comparison.get("results", []))
    for i, r in enumerate(results):
        name = names[i] if names is not None and i < len(names) else str(r.get("policy", ""))
        t.add_row(*comparison_row(name, r))
    return t


def whatif_names(result: Mapping[str, Any]) -> list[str]:
    """Row names of a what-if: hpa, current, candidate (in the server's policy order)."""
    n = len(result.get("comparison", {}).get("results", []))
    return [WHATIF_ROLES[i] if i < len(WHATIF_ROLES) else f"policy {i + 1}" for i in range(n)]


def _span_s(start: str, end: str) -> float | None:
    try:
        return (datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except (TypeError, ValueError):
        return None


def whatif_table(result: Mapping[str, Any], job_url: str | None = None) -> Table:
    """The comparison table of a what-if result; the caption spells out each row's policy
    (long specs would not fit the policy column), the replayed window and the job (its JSON)."""
    t = comparison_table(result.get("comparison", {}), whatif_names(result))
    labels = result.get("labels") or {}
    notes = [f"{role}: {labels[role]}" for role in WHATIF_ROLES
             if role in labels and labels[role] != role]
    window = result.get("window") or {}
    if window.get("from") and window.get("until"):
        notes.append(f"window {window['from']} to {window['until']}")
        replayed_s = _span_s(window["from"], window["until"])
        asked_s = window.get("asked_s")
        if replayed_s is not None and isinstance(asked_s, int | float) and replayed_s < asked_s:
            notes.append(f"only {replayed_s / 3600:.1f} h of the asked {asked_s / 3600:.1f} h "
                         f"replayed (history starts {window.get('recorded_from', '?')}, "
                         f"warm-up {float(window.get('warmup_s') or 0) / 3600:.1f} h)")
    if job_url:
        notes.append(f"job {job_url}")
    t.caption = "\n".join(notes) or None
    return t


# -- I/O -----------------------------------------------------------------------------------------
def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


def _client() -> ApiClient:
    return ApiClient.from_env()


def _target(text: str) -> tuple[str, str]:
    try:
        return parse_target(text)
    except ValueError as e:
        fail(str(e))


def _with_api(target: str, call: Callable[[ApiClient], Any]) -> Any:
    """call(client) on a client from the environment; an API error ends the command."""
    try:
        with _client() as client:
            return call(client)
    except ApiClientError as e:
        _api_error(e, target)


def _defaults() -> dict[str, Any]:
    """The policy document's built-in defaults (imported when a command needs them: the
    policy core would add a third of a second to every `autoscaler` start)."""
    from autoscaler.policy_doc import defaults

    return defaults()


def _api_error(e: ApiClientError, target: str) -> NoReturn:
    if e.status == 412:
        fail(f"HTTP 412: the policy of {target} was changed by someone else since it was "
             f"read; run the command again")
    if e.status == 401:
        fail(f"{e} (check AUTOSCALER_API_TOKEN)")
    fail(str(e))


TargetArg = Annotated[str, typer.Argument(metavar="NAMESPACE/NAME", help="the target")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="key=value; value parsed as JSON when it parses; repeatable")]

policy_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         pretty_exceptions_enable=False,
                         help="Read and change a target's policy through the REST API.")


@policy_app.command("get", cls=OneLineErrors)
def policy_get(target: TargetArg) -> None:
    """Print the target's policy: field, value, default."""
    namespace, name = _target(target)
    response = _with_api(target, lambda client: client.get_policy(namespace, name))
    _console().print(policy_table(target, response.body or {}, _defaults(),
                                  response.etag))


@policy_app.command("set", cls=OneLineErrors)
def policy_set(
    target: TargetArg,
    assignments: SetOpt = None,
    if_match: Annotated[str | None, typer.Option(
        help="apply only if the policy still has this ETag [the one read just before]")] = None,
) -> None:
    """Change fields of the policy (JSON merge patch, guarded by the ETag)."""
    namespace, name = _target(target)
    try:
        changes = parse_assignments(assignments or [])
    except ValueError as e:
        fail(str(e))
    if not changes:
        fail("nothing to change: give --set key=value")

    def read_then_patch(client: ApiClient) -> Any:
        etag = if_match or client.get_policy(namespace, name).etag
        if not etag:
            fail("HTTP 200: the API sent no ETag for the policy")
        return client.patch_policy(namespace, name, changes, etag)

    response = _with_api(target, read_then_patch)
    _console().print(policy_table(target, response.body or {}, _defaults(),
                                  response.etag))


@policy_app.command("history", cls=OneLineErrors)
def policy_history(target: TargetArg) -> None:
    """Print the recorded changes of the policy: when, who, action, old -> new."""
    namespace, name = _target(target)
    changes = _with_api(target, lambda client: client.policy_history(namespace, name))
    _console().print(history_table(target, changes, _defaults()))


def wait_for_job(client: ApiClient, job_url: str, timeout_s: float, *,
                 on_poll: Callable[[float], None] = lambda elapsed_s: None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the job until it is no longer running; ApiClientError after timeout_s."""
    start = clock()
    while True:
        job = client.get_job(job_url)
        if job.get("status") != "running":
            return job
        elapsed = clock() - start
        if elapsed >= timeout_s:
            raise ApiClientError(f"the what-if job is still running after {timeout_s:g} s; "
                                 f"see {job_url}")
        on_poll(elapsed)
        sleep(min(POLL_INTERVAL_S, max(0.0, timeout_s - elapsed)))


def _wait(client: ApiClient, job_url: str, timeout_s: float) -> dict[str, Any]:
    if not sys.stderr.isatty():
        return wait_for_job(client, job_url, timeout_s)
    console = Console(stderr=True)
    with console.status("replaying the window: hpa, current and candidate...") as status:
        return wait_for_job(client, job_url, timeout_s, on_poll=lambda s: status.update(
            f"replaying the window: hpa, current and candidate... {s:.0f} s"))


def whatif(
    target: TargetArg,
    assignments: SetOpt = None,
    window: Annotated[str, typer.Option(help="history to replay: 6h, 1d, 7d")] = "7d",
    wait: Annotated[bool, typer.Option(help="wait for the result and print it; "
                                            "--no-wait prints the job URL")] = True,
    timeout: Annotated[float, typer.Option(help="give up waiting after this many seconds",
                                           min=0)] = 600.0,
) -> None:
    """Replay recent traffic: the policy, the policy with --set changes, the HPA alone.

    Prints the comparison table of `autoscaler simulate` for the target's own history."""
    namespace, name = _target(target)
    try:
        changes = parse_assignments(assignments or [])
    except ValueError as e:
        fail(str(e))
    try:
        with _client() as client:
            current = client.get_policy(namespace, name).body or {}
            candidate = with_changes(current, changes)
            job_url = client.submit_whatif(namespace, name, candidate, window)
            if not wait:
                typer.echo(job_url)
                return
            try:
                job = _wait(client, job_url, timeout)
            except KeyboardInterrupt:
                fail(f"interrupted; the job goes on at {job_url}")
    except ApiClientError as e:
        _api_error(e, target)
    if job.get("status") != "done":
        error = " ".join(str(job.get("error") or "no reason given").split())
        fail(f"the what-if job failed: {error}")
    result = job.get("result") or {}
    console = _console()
    console.print(whatif_table(result, job_url))
    command = result.get("command")
    if command:
        lines = command if isinstance(command, list) else str(command).splitlines()
        typer.echo("reproduce with:")
        for line in lines:  # unwrapped, so they can be copied into a shell
            typer.echo(f"  {line}")


def main() -> None:
    """`python -m autoscaler.cli_client`: the two commands without the rest of the CLI."""
    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      pretty_exceptions_enable=False)
    app.add_typer(policy_app, name="policy")
    app.command(cls=OneLineErrors)(whatif)
    run_app(app)


if __name__ == "__main__":
    main()
