"""``celery -A proj steps <command>``: inspect and control durable functions from a shell.

Installed as a ``celery.commands`` entry point. Every command prints readable text, or JSON
with ``--json`` (on the command or on the group: ``celery -A proj steps --json runs``). A bad
argument or a failing call prints one ``error: ...`` line on stderr and exits non-zero
(2 for usage errors, 1 otherwise), never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import IO, Any, TypeVar, get_args

import click

from celery_steps.clock import ms_to_datetime
from celery_steps.doctor import failed, run_checks
from celery_steps.errors import CeleryStepsError, RunNotFound
from celery_steps.extension import EXTENSION_ATTR, CelerySteps
from celery_steps.functions import Function
from celery_steps.jsonshape import nesting_depth, too_deep
from celery_steps.options import TriggerCron, TriggerEvent
from celery_steps.runs import EventInfo, Run, RunStatus, StepRecord

STATUSES: tuple[str, ...] = get_args(RunStatus)
JSON_META = "celery_steps.cli.json"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# C0 controls but newline, DEL and C1 controls: shown as \xNN (tab and CR as \t and \r).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x0A}
_CONTROLS.update({0x09: "\\t", 0x0D: "\\r"})


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ESC, BEL, CSI, ...) escaped, so ids,
    error messages and other user strings cannot move the cursor, clear the screen or set the
    title. Newlines are kept for the layout."""
    return text.translate(_CONTROLS)


def echo(text: str, file: IO[Any] | None = None) -> None:
    """Every human-readable line the CLI prints goes through here."""
    click.echo(printable(text), file=file)


class StepsCliError(click.ClickException):
    """A failure shown as one ``error: <message>`` line on stderr; exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) or "failed")

    def show(self, file: IO[Any] | None = None) -> None:
        echo(f"error: {self.message}", file=file if file is not None else sys.stderr)


class StepsUsageError(StepsCliError):
    """A bad argument: one line, exit code 2."""

    exit_code = 2


def _one_line_usage(ctx: click.Context, call: Callable[[], T]) -> T:
    try:
        return call()
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `steps`: show the help
            raise
        message = f"{exc.format_message()} (see '{ctx.command_path} --help')"
        raise StepsUsageError(message) from None


class StepsCommand(click.Command):
    """A command whose usage errors are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return _one_line_usage(ctx, lambda: super(StepsCommand, self).parse_args(ctx, args))


class StepsGroup(click.Group):
    """The ``steps`` group: one-line usage errors, and no traceback from any subcommand."""

    command_class = StepsCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return _one_line_usage(ctx, lambda: super(StepsGroup, self).parse_args(ctx, args))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        return _one_line_usage(ctx, lambda: super(StepsGroup, self).resolve_command(ctx, args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except CeleryStepsError as exc:
            raise StepsCliError(str(exc)) from None
        except Exception as exc:  # a store outage, a bug: still one line, no traceback
            raise StepsCliError(f"{type(exc).__name__}: {exc}") from None


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


@click.group(cls=StepsGroup)
@json_option
@click.pass_context
def steps(ctx: click.Context, as_json: bool) -> None:
    """Durable functions: list functions, send events, inspect and control runs."""
    ctx.meta[JSON_META] = as_json


def _extension(ctx: click.Context) -> CelerySteps:
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise StepsCliError("no Celery app: run it as `celery -A proj steps ...`")
    app.loader.import_default_modules()  # imports/include modules (and Django's setup)
    ext: CelerySteps | None = getattr(app, EXTENSION_ATTR, None)
    if ext is None:
        raise StepsCliError(
            f"Celery app {app.main!r} has no CelerySteps installed: add "
            "`steps = CelerySteps(app)` to the module that -A loads"
        )
    return ext


def _emit(ctx: click.Context, as_json: bool, data: Any, text: Callable[[], str]) -> None:
    if as_json or ctx.meta.get(JSON_META):
        click.echo(json.dumps(data, indent=2, default=str))  # json escapes control characters
    else:
        echo(text())


# -- formatting ------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip()
                     for line in lines)


def format_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def format_duration(start: datetime | None, end: datetime | None) -> str:
    """``12ms``, ``3.41s``, ``2m05s``, ``1h02m``; ``-`` when either end is unknown."""
    if start is None or end is None:
        return "-"
    ms = max(0, round((end - start).total_seconds() * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_trigger(trigger: TriggerEvent | TriggerCron) -> str:
    if isinstance(trigger, TriggerCron):
        return f"cron {trigger.cron!r}" + (f" ({trigger.tz})" if trigger.tz else "")
    return f"event {trigger.event}" + (f" if {trigger.if_exp}" if trigger.if_exp else "")


def function_dict(fn: Function) -> dict[str, Any]:
    triggers: list[dict[str, Any]] = [
        {"cron": t.cron, "tz": t.tz} if isinstance(t, TriggerCron)
        else {"event": t.event, "if": t.if_exp}
        for t in fn.triggers
    ]
    return {"id": fn.id, "name": fn.name, "triggers": triggers, "retries": fn.retries,
            "queue": fn.queue, "task": fn.task_name, "internal": fn.internal}


def format_functions(functions: Sequence[Function]) -> str:
    if not functions:
        return "no functions registered"
    rows = [[fn.id + (" (internal)" if fn.internal else ""),
             ", ".join(format_trigger(t) for t in fn.triggers) or "-",
             str(fn.retries), fn.queue or "-"] for fn in functions]
    return table(["ID", "TRIGGERS", "RETRIES", "QUEUE"], rows)


def format_runs(runs: Sequence[Run]) -> str:
    if not runs:
        return "no runs"
    rows = [[r.id, r.function_id, r.status, format_time(r.created_at), format_time(r.ended_at)]
            for r in runs]
    return table(["ID", "FUNCTION", "STATUS", "CREATED", "ENDED"], rows)


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _error_text(error: dict[str, str] | None) -> str:
    if not error:
        return ""
    return f"{error.get('name', 'Error')}: {error.get('message', '')}"


def run_dict(run: Run, outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    data = run.model_dump(mode="json")
    if outputs is not None:
        for step in data["steps"]:
            step["output"] = outputs.get(step["id"])
    return data


def _step_detail(step: StepRecord, outputs: dict[str, Any]) -> str:
    """What a step's row says besides its times: its output or error, and what it waits for
    (the wake time of a sleep or retry, the awaited event, the child run, the Celery task)."""
    parts = []
    if step.status == "running":
        parts.append(f"in progress since {format_time(step.started_at)}")
    if step.error:
        parts.append(_error_text(step.error))
    elif step.id in outputs:
        parts.append(_short(outputs[step.id]))
    ended = step.status in ("completed", "failed")
    if step.op == "wait_for_event" and step.waiting_for and not ended:
        parts.append(f"waiting for {step.waiting_for}")
    if step.child_run_id:
        parts.append(f"child run {step.child_run_id}")
    if step.task_id and not ended:
        parts.append(f"task {step.task_id}")
    if step.wake_at and not ended:
        when = format_time(step.wake_at)
        parts.append(f"wakes {when}" if step.op == "sleep" else
                     f"retry at {when}" if step.status == "retrying" else f"times out {when}")
    return "; ".join(parts)


def _tracebacks(run: Run) -> list[str]:
    """The stored tracebacks: each step's last failed attempt, then the run's own (unless it
    is a step's), indented under a title line."""
    sections, shown = [], set()
    for step in run.steps:
        text = (step.error or {}).get("traceback")
        if text:
            shown.add(text)
            sections.append(f"traceback of step {step.id!r} ({_error_text(step.error)}):")
            sections.append(_indented(text))
    text = (run.error or {}).get("traceback")
    if text and text not in shown:
        sections.append(f"traceback of the run's error ({_error_text(run.error)}):")
        sections.append(_indented(text))
    return sections


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())


def format_run(run: Run, outputs: dict[str, Any] | None = None) -> str:
    """The run's fields, then its step timeline (offset from the run's start, duration, and
    what the step returned, failed with or waits for), then the stored tracebacks."""
    outputs = outputs or {}
    lines = [
        f"run       {run.id}",
        f"function  {run.function_id}",
        f"status    {run.status}",
        f"events    {', '.join(run.event_ids) or '-'}",
        f"created   {format_time(run.created_at)}",
        f"ended     {format_time(run.ended_at)}"
        + (f"  (took {format_duration(run.created_at, run.ended_at)})" if run.ended_at else ""),
    ]
    if run.parent_run_id:
        lines.append(f"parent    {run.parent_run_id}")
    if run.status == "completed":
        lines.append(f"output    {_short(run.output, 200)}")
    if run.error:
        lines.append(f"error     {_error_text(run.error)}")
    lines.append("")
    tracebacks = _tracebacks(run)
    if tracebacks:
        tracebacks.insert(0, "")
    if not run.steps:
        return "\n".join([*lines, "no steps yet", *tracebacks])
    rows = []
    for n, step in enumerate(run.steps, 1):
        start = ("+" + format_duration(run.created_at, step.started_at)
                 if step.started_at else "-")
        rows.append([str(n), step.id, step.op, step.status, str(step.attempts), start,
                     format_duration(step.started_at, step.ended_at),
                     _step_detail(step, outputs)])
    lines.append(table(["#", "STEP", "OP", "STATUS", "ATTEMPTS", "START", "DURATION",
                        "DETAIL"], rows))
    return "\n".join([*lines, *tracebacks])


def format_event(info: EventInfo, started: Sequence[tuple[str, Run | None]]) -> str:
    """The event, the runs it started, and the matched functions that started none (why)."""
    event = info.event
    lines = [
        f"event     {event.id}",
        f"name      {event.name}",
        f"sent      {format_time(ms_to_datetime(event.ts))}",
        f"received  {format_time(info.received_at)}",
        f"routed    {'yes' if info.routed else 'not yet'}",
        f"data      {_short(event.data, 200)}",
        "",
    ]
    if not info.routed:
        lines.append("not routed yet: a worker has not handled this event")
        return "\n".join(lines)
    if started:
        lines.append("runs started")
        lines.append(table(["RUN", "FUNCTION", "STATUS"], [
            [run_id, run.function_id if run else "-", run.status if run else "expired"]
            for run_id, run in started]))
    else:
        lines.append("no run started")
    if info.skipped:
        lines.extend(["", "matched functions that started no run"])
        lines.append(table(["FUNCTION", "REASON", "RUN"], [
            [s.function_id, s.reason, s.run_id or "-"] for s in info.skipped]))
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------
@steps.command()
@json_option
@click.pass_context
def functions(ctx: click.Context, as_json: bool) -> None:
    """List the registered functions and their triggers."""
    fns = sorted(_extension(ctx).functions.values(), key=lambda fn: fn.id)
    _emit(ctx, as_json, [function_dict(fn) for fn in fns], lambda: format_functions(fns))


@steps.command()
@click.argument("name")
@click.argument("data_json", metavar="[DATA_JSON]", required=False)
@click.option("--id", "event_id", metavar="ID", help="Event id (dedupes within 24 hours).")
@json_option
@click.pass_context
def send(ctx: click.Context, name: str, data_json: str | None, event_id: str | None,
         as_json: bool) -> None:
    """Send the event NAME with DATA_JSON (a JSON object); prints the event ids."""
    ext = _extension(ctx)
    data: Any = {}
    if data_json is not None:
        max_depth = ext.settings.json_max_depth
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as exc:
            raise StepsUsageError(f"DATA_JSON is not valid JSON: {exc}") from None
        except RecursionError:  # nested past Python's recursion limit
            raise StepsUsageError(too_deep("DATA_JSON", max_depth)) from None
        if not isinstance(data, dict):
            raise StepsUsageError(
                f"DATA_JSON must be a JSON object such as '{{\"id\": 1}}', "
                f"not {type(data).__name__}")
        if nesting_depth(data, limit=max_depth) > max_depth:
            raise StepsUsageError(too_deep("DATA_JSON", max_depth))
    ids = ext.send(name, data, id=event_id)
    _emit(ctx, as_json, {"event_ids": ids}, lambda: "\n".join(ids))


@steps.command()
@click.option("--function", "function_id", metavar="ID", help="Only runs of this function.")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_context
def runs(ctx: click.Context, function_id: str | None, status: str | None, limit: int,
         as_json: bool) -> None:
    """List runs, newest first."""
    found = _extension(ctx).list_runs(function_id=function_id, status=status, limit=limit)
    _emit(ctx, as_json, [run_dict(r) for r in found], lambda: format_runs(found))


@steps.command()
@click.argument("run_id")
@json_option
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run and its step timeline."""
    run = _extension(ctx).get_run(run_id)
    outputs = {step.id: step.output for step in run.steps if step.status == "completed"}
    _emit(ctx, as_json, run_dict(run, outputs), lambda: format_run(run, outputs))


@steps.command("show-event")
@click.argument("event_id")
@json_option
@click.pass_context
def show_event(ctx: click.Context, event_id: str, as_json: bool) -> None:
    """Show an event, the runs it started, and why matched functions started none."""
    ext = _extension(ctx)
    info = ext.get_event(event_id)
    started: list[tuple[str, Run | None]] = []
    if not (as_json or ctx.meta.get(JSON_META)):
        for run_id in info.run_ids:
            try:
                started.append((run_id, ext.get_run(run_id)))
            except RunNotFound:
                started.append((run_id, None))
    _emit(ctx, as_json, info.model_dump(mode="json"), lambda: format_event(info, started))


@steps.command()
@click.argument("run_id")
@json_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Cancel a run; it stops at its next step boundary. Ended runs stay as they are."""
    ext = _extension(ctx)
    before = ext.get_run(run_id)
    if not before.ended:
        ext.cancel(run_id, reason="cancelled with `celery steps cancel`")
    after = ext.get_run(run_id)
    cancelled = not before.ended and after.status == "cancelled"
    if before.ended:
        message = f"run {run_id} had already ended ({before.status}); nothing to cancel"
    else:
        message = f"cancelled run {run_id}" if cancelled else f"run {run_id} is {after.status}"
    _emit(ctx, as_json, {"run_id": run_id, "status": after.status, "cancelled": cancelled},
          lambda: message)


@steps.command()
@click.argument("run_id")
@json_option
@click.pass_context
def replay(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Start a new run of the same function on the same events; prints its id."""
    new_id = _extension(ctx).replay(run_id)
    _emit(ctx, as_json, {"run_id": new_id, "replay_of": run_id}, lambda: new_id)


@steps.command()
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds to wait for the workers' and beat's replies.")
@json_option
@click.pass_context
def doctor(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Check the store, the workers' queues, beat and clocks; exit 1 if a check FAILs."""
    app_arg = ctx.find_root().params.get("app")
    checks = run_checks(_extension(ctx), timeout=timeout,
                        app_arg=app_arg if isinstance(app_arg, str) else None)
    width = max(len(c.check) for c in checks)
    _emit(ctx, as_json, [c.as_dict() for c in checks], lambda: "\n".join(
        f"{c.status}  {c.check.ljust(width)}  {c.detail}" for c in checks))
    if failed(checks):
        ctx.exit(1)


@steps.command()
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; a non-loopback one needs --basic-auth.")
@click.option("--port", type=click.IntRange(0, 65535), default=5566, show_default=True)
@click.option("--basic-auth", "basic_auth", metavar="USER:PASS",
              envvar="CELERY_STEPS_DASHBOARD_AUTH",
              help="Require these credentials (or set CELERY_STEPS_DASHBOARD_AUTH).")
@click.pass_context
def dashboard(ctx: click.Context, address: str, port: int, basic_auth: str | None) -> None:
    """Serve the web dashboard: functions, runs, events; cancel and replay."""
    from celery_steps.dashboard import server  # the web stack loads only when it is there

    try:
        credentials = server.parse_basic_auth(basic_auth)
        server.check_exposure(address, credentials)
    except CeleryStepsError as exc:
        raise StepsUsageError(str(exc)) from None
    server.require_extras()
    ext = _extension(ctx)
    user = f", basic auth as {credentials[0]!r}" if credentials else ""
    host = f"[{address}]" if ":" in address else address
    click.echo(f"celery-steps dashboard on http://{host}:{port}/{user}", err=True)
    server.serve(ext, address=address, port=port, basic_auth=credentials)
