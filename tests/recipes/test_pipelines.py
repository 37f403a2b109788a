"""dsm/recipes/pipelines: every step parses, every stage recipe loads, and the tiny codec and
TTS pipelines run end to end into the config.json that ships in dsm/assets (the TTS one on
its way to the open-vocabulary stage, which runs too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from dsm.cli import build_parser, named_command
from dsm.recipes.config import recipe_from_dict
from dsm.recipes.pipelines import run as pipelines

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "dsm" / "assets"
STAGES = sorted((REPO / "dsm" / "recipes" / "pipelines").glob("*/*.toml"))
VARIANTS = [(model, tiny, codec) for model in pipelines.MODELS for tiny in (False, True)
            for codec in ((None,) if model == "codec" else (None, str(ASSETS / "codec")))]
# Keys today's config writers add (LM and codec transformer fields that came after the
# shipped files were written, at their default values): the shipped config.json files lack
# them. Until those files are rewritten (or the writers leave such defaults out), exact
# equality fails on these keys alone.
@pytest.mark.parametrize("path", STAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stage_recipe_loads(path: Path) -> None:
    recipe = recipe_from_dict(tomllib.loads(path.read_text()), str(path), check_paths=False)
    assert recipe.kind == path.parent.name


@pytest.mark.parametrize("model,tiny,codec", VARIANTS)
def test_every_step_parses(model: str, tiny: bool, codec: str | None) -> None:
    steps = pipelines.pipeline(model, tiny, codec)
    assert len({s.name for s in steps}) == len(steps)
    for step in steps:
        argv = list(step.argv)
        command = named_command(argv)
        assert command is not None, step.name
        build_parser(command).parse_args(argv)
        for arg in argv:
            if arg.endswith(".toml"):
                assert Path(arg).is_file(), (step.name, arg)


def test_every_stage_recipe_is_used() -> None:
    used = {arg for model in pipelines.MODELS for step in pipelines.pipeline(model)
            for arg in step.argv if arg.endswith(".toml")}
    assert used == {str(p) for p in STAGES}


def test_a_failing_step_is_named(tmp_path: Path) -> None:
    steps = [pipelines.Step("data/one", ("data", "merge", "a.jsonl", "missing.jsonl"))]
    with pytest.raises(pipelines.PipelineError, match=r"step 1 \(data/one\) failed"):
        pipelines.run(steps, tmp_path, log=lambda line: None)
    assert not (tmp_path / ".pipeline" / "data__one.done").exists()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """WORK/models/<model>/config.json of the tiny codec pipeline and of the tiny TTS
    pipeline on the shipped codec (its config names the codec by a weights fingerprint)."""
    made = {}
    for model, codec in (("codec", None), ("tts-open", str(ASSETS / "codec"))):
        work = tmp_path_factory.mktemp(f"pipeline-{model}")
        pipelines.run(pipelines.pipeline(model, tiny=True, codec=codec), work)
        made[model] = work / "models" / model / "config.json"
    made["tts"] = made["tts-open"].parents[1] / "tts" / "config.json"  # on its way
    return made


@pytest.mark.parametrize("model", ["codec", "tts"])
def test_tiny_pipeline_config_is_exactly_the_shipped_one(tiny_runs: dict[str, Path],
                                                         model: str) -> None:
    made = json.loads(tiny_runs[model].read_text())
    assert made == json.loads((ASSETS / model / "config.json").read_text())


def test_tiny_open_tts_differs_from_the_shipped_one_by_its_vocabulary(
        tiny_runs: dict[str, Path]) -> None:
    made = json.loads(tiny_runs["tts-open"].read_text())
    shipped = json.loads((ASSETS / "tts" / "config.json").read_text())
    assert {key for key in made if made[key] != shipped.get(key)} == {"text_card"}
    assert made["text_card"] == 2500  # the open-text tokenizer
