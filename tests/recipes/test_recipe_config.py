"""Recipe TOML checking: bad recipes fail with clear errors, naming file and key, before
any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsm import cli
from dsm.recipes.config import OptimConfig, RecipeError, load_recipe, parse_override
from dsm.recipes.training.trainer import train

CONFIGS = Path(__file__).resolve().parents[2] / "dsm" / "recipes" / "configs"

GOOD = """
kind = "toy"
seed = 3
[data]
batch_size = 4
[train]
max_steps = 5
progress = false
[optim]
lr = 1
betas = [0.8, 0.9]
[task]
hidden = 8
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_recipe_is_typed(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.kind == "toy" and recipe.seed == 3
    assert recipe.data.batch_size == 4 and recipe.train.max_steps == 5
    optim = recipe.optim["model"]
    assert isinstance(optim, OptimConfig)
    assert optim.lr == 1.0 and isinstance(optim.lr, float)      # TOML int widened to float
    assert optim.betas == (0.8, 0.9)
    assert recipe.task.hidden == 8 and recipe.task.seq_len == 24  # defaults kept


def test_shipped_toy_recipe_loads() -> None:
    recipe = load_recipe(CONFIGS / "toy.toml")
    assert recipe.kind == "toy" and recipe.train.max_steps > 0


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD + "\nlearning_rate = 1\n", ["unknown key", "'task.learning_rate'"]),
        (GOOD.replace("[data]", "epochs = 3\n[data]"), ["unknown key", "'epochs'"]),
        (GOOD.replace("max_steps = 5", "max_step = 5"), ["'train.max_step'", "did you mean 'max_steps'"]),
        (GOOD.replace("hidden = 8", "hiden = 8"), ["'task.hiden'", "did you mean 'hidden'"]),
        (GOOD.replace("[optim]", "[optim]\nlrr = 2"), ["'optim.lrr'", "unknown key"]),
        (GOOD + "\n[optim.discriminator]\nlr = 1e-4\n", ["'optim.discriminator'", "no optimizer named"]),
        (GOOD.replace('kind = "toy"', 'kind = "nope"'), ["unknown recipe kind 'nope'"]),
        (GOOD.replace('kind = "toy"\n', ""), ["missing key 'kind'"]),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD.replace("max_steps = 5", 'max_steps = "5"'), ["'train.max_steps'", "an integer", "a string"]),
        (GOOD.replace("max_steps = 5", "max_steps = 5.5"), ["'train.max_steps'", "an integer", "a float"]),
        (GOOD.replace("max_steps = 5", "max_steps = true"), ["'train.max_steps'", "a boolean"]),
        (GOOD.replace("progress = false", "progress = 0"), ["'train.progress'", "a boolean"]),
        (GOOD.replace("lr = 1", 'lr = "fast"'), ["'optim.lr'", "a number"]),
        (GOOD.replace("[0.8, 0.9]", "[0.8]"), ["'optim.betas'", "an array of 2"]),
        (GOOD.replace("batch_size = 4", "batch_size = 0"), ["[data]", "batch_size must be >= 1"]),
        (GOOD.replace("max_steps = 5", 'precision = "fp16"'), ["'train.precision'", "one of"]),
        (GOOD.replace("[data]\nbatch_size = 4", "data = 4"), ["'data'", "must be a table"]),
        ("kind = \n", ["not valid TOML"]),
    ],
)
def test_wrong_types_are_named(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_per_optimizer_override_is_checked_and_resolved(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[optim.model]\nlr = 0.5\n")
    recipe = load_recipe(path)
    assert recipe.optim["model"].lr == 0.5 and recipe.optim["model"].betas == (0.8, 0.9)
    bad = write(tmp_path, GOOD + "\n[optim.model]\nlr = [1]\n", "bad.toml")
    with pytest.raises(RecipeError, match=r"'optim\.model\.lr'"):
        load_recipe(bad)


def test_set_overrides_are_typed_and_checked(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["optim.lr=2e-3", "train.max_steps=9", "task.hidden=12", "out_dir=runs/x"])
    assert recipe.optim["model"].lr == 2e-3 and recipe.train.max_steps == 9
    assert recipe.task.hidden == 12 and recipe.out_dir == "runs/x"   # bare word taken as a string
    with pytest.raises(RecipeError, match=r"'optim\.lrr' \(given by --set\): unknown key"):
        load_recipe(path, ["optim.lrr=1"])
    with pytest.raises(RecipeError, match=r"'train\.max_steps' \(given by --set\): must be an integer"):
        load_recipe(path, ["train.max_steps=many"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(path, ["optim.lr"])
    assert parse_override("data.train_manifest=a/b.jsonl") == (["data", "train_manifest"], "a/b.jsonl")
    assert parse_override("optim.betas=[0.9, 0.99]") == (["optim", "betas"], [0.9, 0.99])


def test_missing_manifest_fails_at_load(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "train.jsonl"
    path = write(tmp_path, GOOD.replace("[data]", f'[data]\ntrain_manifest = "{missing}"'))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert str(path) in message and "data.train_manifest" in message
    assert str(missing) in message and "no such file" in message


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "absent.toml")


def test_empty_corpus_fails_before_training(tmp_path: Path) -> None:
    manifest = tmp_path / "empty.jsonl"
    manifest.write_text("\n")
    path = write(tmp_path, GOOD.replace("[data]", f'[data]\ntrain_manifest = "{manifest}"'))
    recipe = load_recipe(path)          # the file exists: loading is fine
    out = tmp_path / "run"
    with pytest.raises(RecipeError) as error:
        train(recipe, out)
    message = str(error.value)
    assert "empty corpus" in message and str(manifest) in message and str(path) in message
    assert not out.exists()             # nothing trained, nothing written


def test_corpus_smaller_than_one_batch_fails_before_training(tmp_path: Path) -> None:
    manifest = tmp_path / "tiny.jsonl"
    manifest.write_text(json.dumps({"text": "a short line of text that makes two windows"}) + "\n")
    path = write(tmp_path, GOOD.replace("[data]", f'[data]\ntrain_manifest = "{manifest}"'))
    out = tmp_path / "run"
    with pytest.raises(RecipeError, match=r"has 1 items, fewer than one batch \(data.batch_size 4"):
        train(load_recipe(path, ["task.seq_len=30"]), out)
    assert not out.exists()


def test_cli_reports_bad_recipe_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("max_steps = 5", "max_steps = -1"))
    out = tmp_path / "run"
    assert cli.main(["train", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "dsm train: error:" in err and "max_steps must be >= 1" in err and str(path) in err
    assert not out.exists()


def test_cli_help_explains_the_recipe_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for needle in ("[optim]", "[train]", "[data]", "--resume", "--set", "torchrun", "grad_accum"):
        assert needle in text
