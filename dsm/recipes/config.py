"""Recipe files: the TOML that `dsm train` reads, as typed dataclasses, checked strictly.

A recipe is one TOML file with these parts (every table but `kind` is optional):

    kind = "toy"              # which task trains (see dsm.recipes.registry.TASKS)
    seed = 0                  # seeds model init, data order and every random draw
    out_dir = "runs/toy"      # where checkpoints and metrics.csv go (--out overrides)

    [data]                    # DataConfig
    train_manifest = "data/train.jsonl"   # JSONL manifest (paths relative to the cwd)
    valid_manifest = "data/valid.jsonl"
    batch_size = 16           # per rank and per micro-batch
    num_workers = 0

    [train]                   # TrainConfig: length, accumulation, checkpoints, precision
    max_steps = 1000
    grad_accum = 1

    [optim]                   # OptimConfig: AdamW + warmup + cosine, for every optimizer
    lr = 3e-4
    [optim.discriminator]     # overrides for one named optimizer of the task
    lr = 1e-4

    [task]                    # the task's own dataclass (model size, loss weights, ...)

Checking is strict and happens before anything trains: an unknown key, a value of the
wrong type, a value out of range, a manifest that does not exist, or an `[optim.NAME]`
table for an optimizer the task does not have is a `RecipeError` that names the file and
the key. TOML has no null: optional settings are left out to mean "none".
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dsm.recipes.errors import RecipeError
from dsm.recipes.registry import get_task_class

__all__ = ["RecipeError"]  # raised by every check here; defined in errors.py

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class DataConfig:
    """Where the corpus is and how it is batched. `batch_size` is per rank, per micro-batch:
    one optimizer step sees batch_size x train.grad_accum x world_size items."""

    train_manifest: str | None = None
    valid_manifest: str | None = None
    batch_size: int = 8
    num_workers: int = 0
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")


@dataclass
class TrainConfig:
    """Run length, accumulation, logging, checkpoints and precision."""

    max_steps: int = 1000
    grad_accum: int = 1
    log_every: int = 10              # rows of metrics.csv (and the progress bar's loss)
    eval_every: int = 0              # validation loss every N steps (0: never)
    checkpoint_every: int = 500      # a checkpoint every N steps, and always at the end
    keep_checkpoints: int = 3        # the last N are kept, older ones deleted
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU only
    device: str = "auto"             # auto: cuda:LOCAL_RANK when there is a GPU, else cpu
    progress: bool = True            # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_every < 0:
            raise ValueError("eval_every must be >= 0")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to lr x min_lr_ratio at train.max_steps."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0        # applied to matrices only (dim >= 2), not biases/norms
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0           # max global grad norm of this optimizer's parameters; 0: off

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError("betas must be in [0, 1)")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.eps <= 0:
            raise ValueError("grad_clip and weight_decay must be >= 0, eps > 0")


@dataclass
class Recipe:
    """One checked recipe. `optim` has one resolved OptimConfig per optimizer of the task;
    `task` is an instance of the task's own config dataclass; `raw` is the TOML as loaded
    (after --set), kept in checkpoints so a resumed run can say what changed."""

    kind: str
    source: str
    seed: int = 0
    out_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: dict[str, OptimConfig] = field(default_factory=dict)
    task: Any = None
    raw: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ loading

def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override (`key.path=value` strings, as `--set`) and check one recipe file."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {source} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{source}: not valid TOML: {error}") from None
    set_keys = apply_overrides(raw, overrides, source)
    return recipe_from_dict(raw, source, set_keys)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-3` -> (["optim", "lr"], 0.001). The value is read as a TOML value
    (numbers, booleans, strings in quotes, [arrays]); anything else is taken as a string."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> set[str]:
    """Apply `--set` overrides in place; returns the dotted keys that were set."""
    set_keys: set[str] = set()
    for text in overrides:
        parts, value = parse_override(text)
        table = raw
        for i, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise RecipeError(
                    f"{source}: --set {text!r}: '{'.'.join(parts[: i + 1])}' is not a table"
                )
        table[parts[-1]] = value
        set_keys.add(".".join(parts))
    return set_keys


def recipe_from_dict(raw: dict[str, Any], source: str, set_keys: set[str] | None = None,
                     check_paths: bool = True) -> Recipe:
    """Check a loaded recipe dict against the schema and the task it names (and, unless
    `check_paths` is False, e.g. for a checkpoint's recipe, that its manifests exist)."""
    set_keys = set_keys or set()
    where = _Where(source, set_keys)
    known = {"kind", "seed", "out_dir", "data", "train", "optim", "task"}
    _reject_unknown(raw, known, "", where)
    if "kind" not in raw:
        raise RecipeError(f"{source}: missing key 'kind' (the task to train, e.g. kind = \"toy\")")
    kind = _check_value(raw["kind"], str, "kind", where)
    task_class = get_task_class(kind, source)

    seed = _check_value(raw.get("seed", 0), int, "seed", where)
    out_dir = _check_value(raw["out_dir"], str, "out_dir", where) if "out_dir" in raw else None
    data = _build_dataclass(DataConfig, _table(raw, "data", where), "data", where)
    train = _build_dataclass(TrainConfig, _table(raw, "train", where), "train", where)
    optim = _build_optim(_table(raw, "optim", where), task_class.optimizer_names, where)
    task_table = _table(raw, "task", where)
    if task_class.config_class is None:
        _reject_unknown(task_table, set(), "task", where)
        task_config = None
    else:
        task_config = _build_dataclass(task_class.config_class, task_table, "task", where)

    recipe = Recipe(
        kind=kind, source=source, seed=seed, out_dir=out_dir, data=data, train=train,
        optim=optim, task=task_config, raw=raw,
    )
    if check_paths:
        check_manifests(recipe, task_class.needs_manifest)
    return recipe


def check_manifests(recipe: Recipe, needs_manifest: bool) -> None:
    """Every manifest named must exist, and a task that reads one must be given one."""
    if needs_manifest and recipe.data.train_manifest is None:
        raise RecipeError(
            f"{recipe.source}: recipe kind '{recipe.kind}' needs data.train_manifest "
            "(a JSONL manifest, e.g. from `dsm data synth`)"
        )
    for key in ("train_manifest", "valid_manifest"):
        value = getattr(recipe.data, key)
        if value is not None and not Path(value).is_file():
            raise RecipeError(
                f"{recipe.source}: data.{key} = {value!r}: no such file "
                f"(relative paths are taken from the current directory, {Path.cwd()})"
            )


# ------------------------------------------------------------------------------ checking

@dataclass
class _Where:
    source: str
    set_keys: set[str]

    def error(self, key: str, message: str) -> RecipeError:
        given = " (given by --set)" if key in self.set_keys else ""
        return RecipeError(f"{self.source}: key '{key}'{given}: {message}")


def _table(raw: dict[str, Any], name: str, where: _Where) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise where.error(name, f"must be a table ([{name}]), got {_describe(value)}")
    return value


def _reject_unknown(table: dict[str, Any], known: set[str], prefix: str, where: _Where) -> None:
    for key in table:
        if key not in known:
            full = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            listing = ", ".join(sorted(known)) or "none"
            raise where.error(full, f"unknown key{hint} (known here: {listing})")


def _build_dataclass(cls: type, table: dict[str, Any], prefix: str, where: _Where) -> Any:
    """Build dataclass `cls` from a TOML table: no unknown keys, every value of its type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _reject_unknown(table, set(fields), prefix, where)
    values: dict[str, Any] = {}
    for name, item in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in table:
            values[name] = _check_value(table[name], hints[name], key, where)
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise where.error(key, "missing (this key has no default)")
    try:
        return cls(**values)
    except ValueError as error:
        raise RecipeError(f"{where.source}: [{prefix}] {error}") from None


def _build_optim(table: dict[str, Any], names: tuple[str, ...], where: _Where) -> dict[str, OptimConfig]:
    """`[optim]` keys are defaults for every optimizer; `[optim.NAME]` overrides one."""
    option_names = {f.name for f in dataclasses.fields(OptimConfig)}
    defaults = {k: v for k, v in table.items() if not isinstance(v, dict)}
    per_name = {k: v for k, v in table.items() if isinstance(v, dict)}
    _reject_unknown(defaults, option_names, "optim", where)
    for name in per_name:
        if name not in names:
            raise where.error(
                f"optim.{name}",
                f"this task has no optimizer named '{name}' (its optimizers: {', '.join(names)})",
            )
    base = _build_dataclass(OptimConfig, defaults, "optim", where)
    resolved = {}
    for name in names:
        if name in per_name:
            resolved[name] = _build_dataclass(
                OptimConfig, {**defaults, **per_name[name]}, f"optim.{name}", where
            )
        else:
            resolved[name] = base
    return resolved


def _describe(value: Any) -> str:
    kind = {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})" if not isinstance(value, dict) else kind


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"an array of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"an array of {_type_name(args[0])}" if args else "an array"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _check_value(value: Any, hint: Any, key: str, where: _Where) -> Any:
    """Return `value` checked (and int widened to float) against a type hint."""
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise where.error(key, f"must be a table, got {_describe(value)}")
        return _build_dataclass(hint, value, key, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    wrong = where.error(key, f"must be {_type_name(hint)}, got {_describe(value)}")
    if origin in (typing.Union, types.UnionType):
        for option in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, option, key, where)
            except RecipeError:
                continue
        raise wrong
    if origin is Literal:
        if value not in args or type(value) is bool:
            raise wrong
        return value
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [_check_value(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)] if args else value
    if origin is tuple:
        if not isinstance(value, list):
            raise wrong
        if args and args[-1] is Ellipsis:
            return tuple(_check_value(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise wrong
        return tuple(_check_value(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        value_hint = args[1] if args else Any
        return {k: _check_value(v, value_hint, f"{key}.{k}", where) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise where.error(key, f"the schema uses a type the checker does not know: {hint!r}")
