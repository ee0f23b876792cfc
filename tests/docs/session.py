"""Run the ```python blocks of one Markdown file, in order, like a reader following it.

``python tests/docs/session.py DOC REDIS_PORT PROJECT_DIR`` (started by test_docs.py, one
process per file, so Django settings, Celery's current app and imported modules never leak
between files or into the rest of the suite).

- Blocks share one namespace, like a doctest session. A file block (first line
  ``# proj/celery.py``) is written under PROJECT_DIR, which is on ``sys.path``, and imported
  (reloaded when written again); its public names then join the namespace.
- ``redis://localhost:6379/N`` in a block becomes database 10 + N of the test server; those
  databases are emptied first, so every file starts from a fresh key space.
- Before a block that is not a file, every Celery app seen so far that has a CelerySteps and a
  broker on the test server gets an in-thread worker (thread pool, with the celery-steps
  bootstep, so the timer poller runs), which also learns of the tasks declared after it
  started. Workers stop at the end of the file.
- A ``test_*`` function a block defines is called right away, like pytest would, with the
  harness's workers stopped (a test brings its own); a ``redis_url`` parameter gets a
  database of the test server.
- At the end, a run that failed or a step that raised (an undefined helper, say) fails the file.
- Blocks marked ``<!-- docs-test: skip (why) -->`` are only compiled.

Exit status 0 when every block ran, 1 otherwise, with the failing block and its traceback.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.worker.consumer import Consumer
from docblocks import Block, python_blocks

from celery_steps import CelerySteps, ConfigurationError

DOCS_DB = 10  # doc URLs' database N becomes DOCS_DB + N
LAST_DB = 15
LOCAL_URL = re.compile(r"redis://localhost:6379(?:/(\d+))?")


class DocFailure(Exception):
    """A block of the document did not run as written."""


class Strategies(dict[str, Any]):
    """A worker's task handlers that learn the tasks declared after the worker started.

    A worker knows only the tasks it started with, so a block that declares a function and
    sends its event would have its first message refused as an unregistered task.
    """

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer

    def __missing__(self, name: str) -> Any:
        if name not in self.consumer.app.tasks:
            raise KeyError(name)  # really unknown: Celery reports it as usual
        self.consumer.update_strategies()
        return dict.__getitem__(self, name)


class DocsConsumer(Consumer):
    """Celery's consumer, with :class:`Strategies`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategies = Strategies(self)


class Session:
    """One Markdown file's blocks, its namespace, project directory and workers."""

    def __init__(self, doc: Path, port: int, project: Path) -> None:
        self.doc = doc
        self.port = port
        self.project = project
        # a real module, so that what inspects a class's module (dataclasses, pydantic,
        # typing.get_type_hints) finds the namespace the blocks run in
        module = types.ModuleType("docs_session")
        sys.modules[module.__name__] = module
        self.namespace: dict[str, Any] = module.__dict__
        self.namespace["__builtins__"] = builtins
        self.apps: list[Celery] = []
        self.workers: dict[int, Any] = {}  # id(app) -> its running worker (None: no worker)
        self.served: list[Celery] = []  # the apps that had a worker: their runs are checked
        self.called_tests: set[int] = set()
        self.current: Block | None = None  # the block running, for the failure report
        self.stack = contextlib.ExitStack()

    # -- the test server ----------------------------------------------------------------
    def url(self, db: int = 0) -> str:
        if DOCS_DB + db > LAST_DB:
            raise DocFailure(f"redis://localhost:6379/{db}: the docs test maps databases 0 to "
                             f"{LAST_DB - DOCS_DB} only")
        return f"redis://127.0.0.1:{self.port}/{DOCS_DB + db}"

    def flush(self) -> None:
        for db in range(DOCS_DB, LAST_DB + 1):
            client = redis.Redis(port=self.port, db=db)
            client.flushdb()
            client.close()

    def rewrite(self, code: str) -> str:
        return LOCAL_URL.sub(lambda m: self.url(int(m.group(1) or 0)), code)

    # -- blocks -------------------------------------------------------------------------
    def run(self, blocks: list[Block]) -> None:
        self.flush()
        sys.path.insert(0, str(self.project))
        try:
            for block in blocks:
                self.run_block(block)
        finally:
            self.stop_workers()
        self.current = None
        self.check_runs()
        self.flush()

    def run_block(self, block: Block) -> None:
        self.current = block
        code = self.rewrite(block.code)
        if block.skip is not None:
            compile(code, str(block.doc), "exec")
            print(f"compiled {block.where} (skipped: {block.skip})")
            return
        if block.file is None:
            if defines_tests(code):
                self.stop_workers()  # a test brings its own worker, if it needs one
            else:
                self.start_workers()
            # blank lines in front, so tracebacks show the Markdown file's own line numbers
            source = "\n" * (block.line - 1) + code
            exec(compile(source, str(block.doc), "exec"), self.namespace)
            print(f"ran      {block.where}")
        else:
            self.import_file(block, code)
            print(f"imported {block.where} as {block.file}")
        self.find_apps()
        self.call_tests(block)

    def import_file(self, block: Block, code: str) -> None:
        assert block.file is not None and block.module is not None
        path = self.project / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in path.relative_to(self.project).parents:
            init = self.project / package / "__init__.py"
            if package != Path(".") and not init.exists():
                init.write_text("")
        path.write_text(code, encoding="utf-8")
        importlib.invalidate_caches()
        module = sys.modules.get(block.module)
        module = importlib.reload(module) if module else importlib.import_module(block.module)
        self.namespace.update({name: value for name, value in vars(module).items()
                               if not name.startswith("_")
                               and not isinstance(value, types.ModuleType)})

    def call_tests(self, block: Block) -> None:
        fixtures = {"redis_url": self.url()}
        for name, value in list(self.namespace.items()):
            if not (name.startswith("test_") and inspect.isfunction(value)):
                continue
            if id(value) in self.called_tests:
                continue
            self.called_tests.add(id(value))
            self.stop_workers()
            params = inspect.signature(value).parameters
            unknown = set(params) - set(fixtures)
            if unknown:
                raise DocFailure(f"{name} needs {sorted(unknown)}; the docs test provides only "
                                 f"{sorted(fixtures)}")
            value(**{p: fixtures[p] for p in params})
            print(f"passed   {name} ({block.where})")

    # -- workers ------------------------------------------------------------------------
    def find_apps(self) -> None:
        for value in list(self.namespace.values()):
            app = value.app if isinstance(value, CelerySteps) else value
            if isinstance(app, Celery) and all(app is not known for known in self.apps):
                try:
                    CelerySteps.from_app(app)
                except ConfigurationError:
                    continue  # a Celery app without celery-steps: nothing to run
                self.apps.append(app)

    def start_workers(self) -> None:
        for app in self.apps:
            if id(app) in self.workers:
                continue
            broker = str(app.conf.broker_url or "")
            if not broker.startswith(f"redis://127.0.0.1:{self.port}/") or (
                    app.conf.task_always_eager):
                self.workers[id(app)] = None  # not on the test server: nothing to run it
                continue
            worker = self.stack.enter_context(start_worker(
                app, pool="threads", concurrency=4, perform_ping_check=False,
                loglevel="WARNING", shutdown_timeout=20, consumer_cls=DocsConsumer))
            self.workers[id(app)] = worker
            if all(app is not served for served in self.served):
                self.served.append(app)
            print(f"started a worker for the app {app.main!r}")

    def stop_workers(self) -> None:
        """Stop the running workers; the next block that needs them starts them again."""
        self.stack.close()
        self.workers.clear()

    def check_runs(self) -> None:
        problems = []
        for app in self.served:
            for run in CelerySteps.from_app(app).list_runs(limit=1000):
                if run.status == "failed":
                    problems.append(f"run {run.id} of {run.function_id} failed: {run.error}")
                problems += [f"step {step.id!r} of run {run.id} ({run.function_id}) raised: "
                             f"{step.error}" for step in run.steps if step.error]
        if problems:
            raise DocFailure("the document's runs met errors:\n  " + "\n  ".join(problems))


def defines_tests(code: str) -> bool:
    """Whether a block defines ``test_*`` functions: it runs as a test module does."""
    return any(isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
               for node in ast.parse(code).body)


def main(doc: Path, port: int, project: Path) -> int:
    session = Session(doc, port, project)
    blocks = python_blocks(doc)
    try:
        session.run(blocks)
    except BaseException:
        block = session.current
        where = f"the block at {block.where}" if block else doc.name
        if block is not None and block.file:
            where += f" (written to {block.file})"
        print(f"\nFAILED: {where}", file=sys.stderr)
        traceback.print_exc()
        return 1
    ran = sum(b.skip is None for b in blocks)
    print(f"{doc.name}: {ran} blocks ran, {len(blocks) - ran} only compiled")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), int(sys.argv[2]), Path(sys.argv[3]).resolve()))
