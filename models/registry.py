"""Which models `tritonprop train NAME` knows: task name -> the module that defines its `TASK`.

A task whose module cannot be imported (not written yet, or missing a dependency) is reported as
unavailable, with the reason, instead of taking the whole CLI down with it.
"""
from __future__ import annotations

import importlib

from tritonprop.models.task import Task

TASKS = {
    "cnn": "tritonprop.models.cnn",
    "names": "tritonprop.models.names",
    "namegen": "tritonprop.models.namegen",
    "seq2seq": "tritonprop.models.seq2seq",
    "charlm": "tritonprop.models.charlm",
    "vision": "tritonprop.models.vision",
}


class TaskUnavailable(RuntimeError):
    """The task's module does not import; the message says why."""


def load_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    try:
        module = importlib.import_module(TASKS[name])
    except ImportError as error:
        raise TaskUnavailable(f"{name}: unavailable ({TASKS[name]} does not import: {error})") from error
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise TaskUnavailable(f"{name}: unavailable ({TASKS[name]} defines no TASK)")
    return task


def available() -> dict[str, Task | TaskUnavailable]:
    """Every registered task: its Task, or the TaskUnavailable that says why it cannot run."""
    tasks = {}
    for name in TASKS:
        try:
            tasks[name] = load_task(name)
        except TaskUnavailable as error:
            tasks[name] = error
    return tasks
