"""The CLI against hostile input: no escape sequence reaches the terminal, deep JSON is refused.

In-process (click's CliRunner) on an eager memory-store app: no Redis, no subprocess.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result

from celery_steps import CelerySteps, Context, NonRetriableError
from celery_steps.cli import printable
from celery_steps.cli import steps as steps_command
from celery_steps.testing import eager_steps, settle

HOSTILE = "\x1b[2J\x07"


@pytest.fixture
def ext() -> CelerySteps:
    ext = eager_steps()

    @ext.function(id="hostile", trigger="t/hostile", retries=0)
    def hostile(ctx: Context) -> None:
        ctx.step.run(f"step{HOSTILE}", lambda: "out\x1b]0;title\x07")

        def explode() -> None:
            raise NonRetriableError(f"bad{HOSTILE}\x9b31m")

        ctx.step.run("explode", explode)

    return ext


def invoke(ext: CelerySteps, *args: str) -> Result:
    """Run ``steps *args``; ``color=True`` makes click keep ANSI codes, as on a terminal."""
    return CliRunner().invoke(steps_command, list(args), obj=SimpleNamespace(app=ext.app),
                              color=True)


def assert_no_controls(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]
    assert bad == [], repr(text)


def test_show_escapes_control_characters_in_ids_and_errors(ext: CelerySteps) -> None:
    [event_id] = ext.send("t/hostile", {}, id=f"evt{HOSTILE}")
    run = settle(ext, ext.runs_for_event(event_id)[0].id)
    assert run.status == "failed"

    result = invoke(ext, "show", run.id)

    assert result.exit_code == 0, result.output
    assert_no_controls(result.output)
    assert "evt\\x1b[2J\\x07" in result.output  # visible, not interpreted
    assert "step\\x1b[2J\\x07" in result.output
    assert "bad\\x1b[2J\\x07\\x9b31m" in result.output


def test_show_json_stays_exact_and_escaped_by_json(ext: CelerySteps) -> None:
    [event_id] = ext.send("t/hostile", {}, id=f"evt{HOSTILE}")
    run = settle(ext, ext.runs_for_event(event_id)[0].id)

    result = invoke(ext, "show", run.id, "--json")

    assert_no_controls(result.output)
    assert json.loads(result.output)["event_ids"] == [f"evt{HOSTILE}"]


def test_send_prints_a_hostile_event_id_escaped(ext: CelerySteps) -> None:
    result = invoke(ext, "send", "t/other", "--id", f"evt{HOSTILE}")

    assert result.exit_code == 0, result.output
    assert result.output == "evt\\x1b[2J\\x07\n"


def test_an_error_naming_a_hostile_run_id_is_escaped(ext: CelerySteps) -> None:
    result = invoke(ext, "show", f"run{HOSTILE}")

    assert result.exit_code == 1
    assert_no_controls(result.stderr)
    assert "run\\x1b[2J\\x07" in result.stderr


def test_printable_keeps_newlines_and_text_and_escapes_the_rest() -> None:
    assert printable("a\nb ü ✓") == "a\nb ü ✓"
    assert printable("\t\r\x00\x7f\x9b") == "\\t\\r\\x00\\x7f\\x9b"


def nested_json(depth: int) -> str:
    """A JSON object nested ``depth`` levels deep."""
    return '{"d": ' + "[" * (depth - 2) + "{}" + "]" * (depth - 2) + "}"


def test_send_accepts_data_json_nested_to_the_limit(ext: CelerySteps) -> None:
    result = invoke(ext, "send", "t/deep", nested_json(64))

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("depth", [65, 5_000])
def test_send_refuses_data_json_nested_deeper_than_the_limit(ext: CelerySteps, depth: int) -> None:
    result = invoke(ext, "send", "t/deep", nested_json(depth))

    assert result.exit_code == 2, result.output
    assert "more than 64 levels" in result.stderr
    assert "steps_json_max_depth" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert ext.list_runs() == []
