"""Crash points: armed from a test or the environment, they fire exactly where named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_steps import Context, faults
from celery_steps.testing import run_function
from tests.conftest import ROOT


class Crashed(BaseException):
    pass


def _raise(point: str, label: str) -> None:
    raise Crashed(f"{point}={label}")


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    faults.disarm()


def test_a_disarmed_crash_point_does_nothing() -> None:
    faults.crash_point("step.before_checkpoint", "any")


def test_an_armed_crash_point_fires_only_for_its_label() -> None:
    # given a crash point armed for step "charge" only
    faults.arm("step.before_checkpoint", label="charge", action=_raise)

    # then another step passes, and "charge" crashes there
    faults.crash_point("step.before_checkpoint", "ship")
    with pytest.raises(Crashed, match=r"step\.before_checkpoint=charge"):
        faults.crash_point("step.before_checkpoint", "charge")


def test_an_unknown_crash_point_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown crash point"):
        faults.arm("step.nowhere")


def test_the_engine_crashes_between_a_step_and_its_checkpoint() -> None:
    from celery_steps.testing import eager_steps

    steps = eager_steps()

    @steps.function(id="crashing", trigger="t/crash")
    def crashing(ctx: Context) -> int:
        return int(ctx.step.run("charge", lambda: 1))

    faults.arm("step.before_checkpoint", label="charge", action=_raise)
    with pytest.raises(Crashed):
        run_function(crashing)


def test_the_environment_arms_a_kill_that_happens_once(tmp_path: Path) -> None:
    # given a child process armed through the environment, with a once-flag
    flag = tmp_path / "crashed"
    code = ("from celery_steps import faults\n"
            "faults.crash_point('run.after_finish', 'fn')\n"
            "print('survived')\n")
    env = {**os.environ, "CELERY_STEPS_CRASH_AT": "run.after_finish=fn",
           "CELERY_STEPS_CRASH_ONCE": str(flag), "PYTHONPATH": str(ROOT)}

    # when it runs twice
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    # then the first is killed by SIGKILL at the point, the second runs through
    assert first.returncode == -signal.SIGKILL and "survived" not in first.stdout
    assert flag.read_text() == "run.after_finish=fn\n"
    assert second.returncode == 0 and "survived" in second.stdout
