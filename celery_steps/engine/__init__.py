"""The execution engine: replay a handler from the top, memoizing every step.

How a run executes (the model to keep in mind when changing anything here):

1. The task ``celery_steps.fn.<id>`` receives a run id. :class:`Executor` takes the run's lease
   and loads every stored step state in one round trip.
2. The handler is called from the top. Each ``ctx.step.*`` call computes its key (step id plus
   an occurrence counter, kept by the :class:`~celery_steps.engine.cursor.StepCursor`) and
   looks it up: a final state returns the stored result (or raises
   the stored :class:`~celery_steps.errors.StepError`) without running anything.
3. A new ``step.run`` executes inline and is checkpointed with one atomic store write; the
   handler continues in the same task. Nothing goes through the broker between steps.
4. ``sleep``, ``wait_for_event``, ``invoke``, ``run_task``, ``parallel`` and retry backoff
   raise a private :class:`~celery_steps.engine.interrupts.Suspend` (a ``BaseException``, so
   ``except Exception`` in user code cannot swallow it). The executor records what wakes the
   run (a timer, a waiter) and returns; the worker slot is free.
5. A step whose function finished but whose checkpoint was not written (the worker died in
   between) runs again: steps are at-least-once, checkpoints are exactly-once.
"""
