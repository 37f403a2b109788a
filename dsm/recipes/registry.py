"""The recipe kinds: which `Task` class trains `kind = "..."`, importing its module on first
use. Apart from the task interface so that the recipe schema (config.py) can check a
recipe's kind without importing the tasks, which import the schema."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dsm.recipes.errors import RecipeError

if TYPE_CHECKING:
    from dsm.recipes.tasks.base import Task

TASKS: dict[str, type[Task]] = {}

# Tasks that live in their own modules, imported on first use (they register themselves).
TASK_MODULES: dict[str, str] = {
    "toy": "dsm.recipes.tasks.toy",
    "codec": "dsm.recipes.tasks.codec",
    "asr": "dsm.recipes.tasks.asr",
    "tts": "dsm.recipes.tasks.tts",
    "translation": "dsm.recipes.tasks.translation",
}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make `cls` trainable by recipes with `kind = cls.kind`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no `kind`")
    TASKS[cls.kind] = cls
    return cls


def get_task_class(kind: str, source: str = "recipe") -> type[Task]:
    """The task class for a recipe kind, importing its module when needed."""
    if kind not in TASKS and kind in TASK_MODULES:
        module_name = TASK_MODULES[kind]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                raise RecipeError(
                    f"{source}: recipe kind '{kind}' needs {module_name}, which is not part "
                    "of this build"
                ) from None
            raise
    if kind not in TASKS:
        known = sorted(set(TASKS) | set(TASK_MODULES))
        raise RecipeError(f"{source}: key 'kind': unknown recipe kind '{kind}' (known: {', '.join(known)})")
    return TASKS[kind]
