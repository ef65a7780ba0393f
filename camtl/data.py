"""Kept for older imports: ``camtl.data`` re-exports the task definitions (`camtl.tasks`) and the readers and
collator (`camtl.readers`). New code imports from those two modules."""

from .readers import MultiTaskCollator, tokenize_split
from .tasks import (
    BUILTIN_TASKS,
    EXTRA_TASKS,
    GLUE_TASKS,
    FileSource,
    GlueSource,
    TaskDef,
    get_task,
    load_split,
    resolve_labels,
    user_task,
)

__all__ = [
    "BUILTIN_TASKS",
    "EXTRA_TASKS",
    "FileSource",
    "GLUE_TASKS",
    "GlueSource",
    "MultiTaskCollator",
    "TaskDef",
    "get_task",
    "load_split",
    "resolve_labels",
    "tokenize_split",
    "user_task",
]
