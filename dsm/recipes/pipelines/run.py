"""The runs that made the shipped default models, as code.

Reproduces the models shipped in dsm/assets as of commit 7870116 ("ASR: two more
slow-copy stages"): the codec shipped in 8430bb7 (spectral Mimi, code space retrained
with the STOI loss), the ASR model of 7870116 (20 stages, the last reading all 16
codebooks on slow copies of the mix) and the TTS model of 8430bb7 (one voice, adapted
to the retrained codec's codes). The steps are the commands of the training log
(docs/history.md), in dependency order, each a `dsm` argument list run in-process with
the work directory as the current directory; the stage recipes are the TOML files next
to this module. Outputs land in WORK/models/<name>, laid out like dsm/assets.

`asr-open` and `tts-open` go on from those models to the open-vocabulary stages: real
English text (`dsm data text`) spoken by the synthesizers, a tokenizer fitted to it, and
one stage each from the lexicon model (shipped as models/asr-lexicon, models/tts-lexicon)
into WORK/models/asr-open and WORK/models/tts-open.

    python -m dsm.recipes.pipelines.run tts --work /data/dsm-work
    python -m dsm.recipes.pipelines.run asr --work /tmp/w --tiny --codec dsm/assets/codec

A step that finished leaves WORK/.pipeline/<step>.done and is skipped on the next run.
`--tiny` runs the same steps on tiny corpora for 1-2 training steps, through the
commands' own options and `dsm train --set`; nothing that goes into a model's config.json
changes. `--codec DIR` skips the codec stages, and every ASR and TTS stage reads DIR
(historically their first stages read the codec before its code space was retrained,
models/codec-v1 here; with one codec they all read DIR's codes instead).

What is not exact: corpora are made by today's `dsm data synth` / `perturb`, which give
the same files for the same seed only within one version of the code; training on CPU
threads is not bitwise deterministic across machines; the shipped models' config.json
name their codec by a fingerprint of its weights, so only a run that uses the shipped
codec (`--codec dsm/assets/codec`) can give the ASR and TTS config.json exactly. The
historic runs used one CPU thread each (two for some of the late ASR stages);
threads change speed and the order of floating-point sums, not the commands. Steps with a
`note` (`--list` prints them) depart from the historic run in ways it names.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("codec", "asr", "tts", "asr-open", "tts-open")
TINY_STEPS = 2  # training steps per stage in --tiny (a stopped stage stops after 1)


class PipelineError(RuntimeError):
    """A step failed; the message names it."""


@dataclass(frozen=True)
class Step:
    """One `dsm` command of a pipeline. `argv` has paths relative to the work directory;
    `note` says where the step departs from the historic run."""

    name: str
    argv: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class Scale:
    """Full size, or --tiny: the same commands on tiny corpora for a step or two."""

    tiny: bool = False

    def hours(self, hours: float, tiny_hours: float = 0.02) -> str:
        return str(tiny_hours if self.tiny else hours)

    def workers(self, workers: int) -> str:
        return "1" if self.tiny else str(workers)

    def sample(self, rows: int) -> str:
        return "4" if self.tiny else str(rows)

    def checkpoint(self, run: str, step: int, stopped: bool = False) -> str:
        """A stage's checkpoint path; in --tiny, the step that stage actually ended at."""
        if self.tiny:
            step = 1 if stopped else TINY_STEPS
        return f"runs/{run}/checkpoints/step_{step:08d}.pt"


def recipe(model: str, stage: str) -> str:
    """The absolute path of a stage recipe, e.g. recipe("asr", "01-base")."""
    return str(HERE / model / f"{stage}.toml")


def _toml(value: str) -> str:
    return '"' + value + '"'


class Builder:
    """Makes the steps; knows the scale and the codec override."""

    def __init__(self, scale: Scale, codec: str | None) -> None:
        self.scale = scale
        self.codec = codec

    def synth(self, name: str, out: str, hours: float, *options: str, seed: int,
              workers: int = 1, tiny_hours: float = 0.02) -> Step:
        return Step(name, ("data", "synth", *options, "--hours", self.scale.hours(hours, tiny_hours),
                           "--out", out, "--seed", str(seed),
                           "--workers", self.scale.workers(workers), "--quiet"))

    def merge(self, name: str, out: str, *inputs: str, prefix_ids: bool = True,
              options: tuple[str, ...] = ()) -> Step:
        return Step(name, ("data", "merge", out, *inputs, *options,
                           *(("--prefix-ids",) if prefix_ids else ())))

    def sample(self, name: str, out: str, source: str, rows: int, seed: int) -> Step:
        return Step(name, ("data", "merge", out, source, "--sample", self.scale.sample(rows),
                           "--seed", str(seed)))

    def perturb(self, name: str, manifest: str, out: str, *options: str) -> Step:
        return Step(name, ("data", "perturb", manifest, "--out", out, *options, "--no-progress"))

    def _task_sets(self) -> tuple[str, ...]:
        if self.codec is None:
            return ()
        return ("--set", f"task.codec={_toml(self.codec)}")

    def codes(self, name: str, model: str, stage: str, workers: int = 1) -> Step:
        return Step(name, ("data", "codes", recipe(model, stage), *self._task_sets(),
                           "--workers", self.scale.workers(workers), "--no-progress"))

    def train(self, name: str, model: str, stage: str, *sets: str, stop_after: int | None = None,
              resume: bool = False, init_from: str | None = None, note: str = "") -> Step:
        """`dsm train` of one stage recipe. `init_from` overrides the recipe's (a checkpoint
        whose step number differs in --tiny); `sets` are the historic command's own --set."""
        argv = ["train", recipe(model, stage)]
        if resume:
            argv.append("--resume")
        for override in sets:
            argv += ["--set", override]
        argv += list(self._task_sets()) if model != "codec" else []
        if init_from is not None:
            argv += ["--set", f"task.init_from={_toml(init_from)}"]
        if self.scale.tiny:
            argv += ["--set", f"train.max_steps={TINY_STEPS}", "--set", "data.batch_size=2",
                     "--set", "train.checkpoint_every=1", "--set", "train.log_every=1",
                     "--set", "train.progress=false"]
        if stop_after is not None:
            argv += ["--stop-after", "1" if self.scale.tiny else str(stop_after)]
        return Step(name, tuple(argv), note)

    def ship(self, name: str, kind: str, source: str, target: str, *options: str) -> Step:
        return Step(name, ("ship", kind, source, target, *options))


def corpora(b: Builder) -> list[Step]:
    """The first two corpora and the shared tokenizer."""
    return [
        b.synth("data/en", "data/en", 3, "--lang", "en", seed=0, workers=2, tiny_hours=0.2),
        b.synth("data/en2", "data/en2", 5, "--lang", "en", seed=1),
        b.merge("data/en-all", "data/en-all/train.jsonl", "data/en/train.jsonl",
                "data/en2/train.jsonl"),
        Step("data/tokenizer", ("data", "tokenizer", "--manifest", "data/en/train.jsonl",
                                "--out", "data/en/tokenizer", "--vocab-size", "1500",
                                "--model-type", "bpe")),
    ]


def asr_mix(b: Builder) -> list[Step]:
    """The ASR mix up to data/asr-mix/f.jsonl (the codec's stage 4 trains on it too)."""
    return [
        b.perturb("data/en-sp", "data/en-all/train.jsonl", "data/en-sp", "--speeds", "0.9,1.1"),
        b.synth("data/en3", "data/en3", 12, "--lang", "en", seed=3, workers=2),
        b.merge("data/mix-a", "data/asr-mix/a.jsonl", "data/en-sp/train.jsonl",
                "data/en3/train.jsonl"),
        b.merge("data/mix-flite", "data/asr-mix/flite.jsonl", "data/en-all/train.jsonl",
                "data/en3/train.jsonl", options=("--speakers", "flite:*")),
        b.perturb("data/flite-tempo", "data/asr-mix/flite.jsonl", "data/flite-tempo",
                  "--tempos", "0.75,0.85", "--no-original"),
        b.merge("data/mix-c", "data/asr-mix/c.jsonl", "data/asr-mix/a.jsonl",
                "data/flite-tempo/flite.jsonl", prefix_ids=False),
        b.synth("data/slt", "data/slt", 6, "--lang", "en", "--voices", "flite:slt",
                "--eval-fraction", "0", seed=2, workers=2),
        b.merge("data/mix-e", "data/asr-mix/e.jsonl", "data/asr-mix/c.jsonl",
                "data/slt/train.jsonl"),
        b.synth("data/fest", "data/fest", 5, "--engines", "flite,festival", seed=4),
        b.perturb("data/fest-tempo", "data/fest/train.jsonl", "data/fest-tempo",
                  "--tempos", "0.8", "--no-original"),
        b.merge("data/mix-f", "data/asr-mix/f.jsonl", "data/asr-mix/e.jsonl",
                "data/fest/train.jsonl", "data/fest-tempo/train.jsonl"),
    ]


def codec_stages(b: Builder) -> list[Step]:
    """Six codec stages; ships the first code space as models/codec-v1 (what the first ASR
    and TTS stages read) and the last stage as models/codec."""
    s = b.scale
    return [
        b.train("codec/01-all", "codec", "01-all", stop_after=800),
        b.train("codec/02-decoder", "codec", "02-decoder", stop_after=1000,
                init_from=s.checkpoint("codec-stage1", 800, stopped=True) if s.tiny else None),
        b.train("codec/03-decoder", "codec", "03-decoder",
                init_from=s.checkpoint("codec-stage2", 1000, stopped=True) if s.tiny else None),
        b.train("codec/04-decoder-mix", "codec", "04-decoder-mix",
                init_from=s.checkpoint("codec-stage3", 1500) if s.tiny else None,
                note="historically this stage ran after the ASR model's stage 7 had made its mix; "
                "the order does not change what either trains on"),
        b.ship("codec/ship-v1", "codec", "runs/codec-stage4/codec", "models/codec-v1",
               "--dtype", "float16"),
        b.train("codec/05-decoder-stoi", "codec", "05-decoder-stoi",
                init_from=s.checkpoint("codec-stage4", 7000) if s.tiny else None),
        b.train("codec/06-all-stoi", "codec", "06-all-stoi", stop_after=1000,
                init_from=s.checkpoint("codec-stoi3", 3000) if s.tiny else None),
        b.ship("codec/ship", "codec", s.checkpoint("codec-all5", 1000, stopped=True),
               "models/codec", "--dtype", "float16"),
    ]


def given_codec(b: Builder) -> list[Step]:
    """--codec DIR: every stage reads DIR (`--set task.codec`); a copy in models/codec makes
    the shipped directories' "../codec" resolve."""
    assert b.codec is not None
    return [b.ship("codec/given", "codec", b.codec, "models/codec")]


def asr_stages(b: Builder) -> list[Step]:
    """Twenty ASR stages and the data each adds to the mix."""
    steps = [
        b.train("asr/01-base", "asr", "01-base",
                note="stages 1-9 historically read the codec shipped at their time (stages 2 and 3 "
                "of the codec, float16); decoder-only stages keep the code space, so their codes "
                "are models/codec-v1's"),
        b.train("asr/02-speed", "asr", "02-speed"),
        b.train("asr/03-speed", "asr", "03-speed"),
        b.train("asr/04-en3", "asr", "04-en3"),
        b.train("asr/05-flite-tempo", "asr", "05-flite-tempo"),
        b.train("asr/06-slt", "asr", "06-slt"),
        b.train("asr/07-festival", "asr", "07-festival"),
        b.perturb("data/fest-pitch", "data/fest/train.jsonl", "data/fest-pitch",
                  "--pitches", "0.84,1.12", "--no-original"),
        b.merge("data/mix-g", "data/asr-mix/g.jsonl", "data/asr-mix/f.jsonl",
                "data/fest-pitch/train.jsonl"),
        b.train("asr/08-festival-pitch", "asr", "08-festival-pitch"),
        b.perturb("data/flite-pitch", "data/asr-mix/flite.jsonl", "data/flite-pitch",
                  "--pitches", "0.8,1.18", "--no-original"),
        b.merge("data/mix-h", "data/asr-mix/h.jsonl", "data/asr-mix/g.jsonl",
                "data/flite-pitch/flite.jsonl"),
        b.train("asr/09-flite-pitch", "asr", "09-flite-pitch"),
        b.sample("data/mix-h16k", "data/asr-mix/h16k.jsonl", "data/asr-mix/h.jsonl", 16000, 0),
        b.codes("asr/10-codes", "asr", "10-new-codes"),
        b.train("asr/10-new-codes", "asr", "10-new-codes"),
        b.synth("data/styles", "data/styles", 6, "--engines", "flite,festival",
                "--eval-fraction", "0", "--rate-range", "0.65,1.25", "--pitch-range", "0.8,1.25",
                seed=9),
        b.merge("data/mix-s", "data/asr-mix/s.jsonl", "data/asr-mix/h16k.jsonl",
                "data/styles/train.jsonl"),
        b.codes("asr/11-codes", "asr", "11-all-codebooks"),
        b.train("asr/11-all-codebooks", "asr", "11-all-codebooks"),
        b.synth("data/kal", "data/kal", 4, "--engines", "flite,festival", "--rough-voices",
                "--voices", "flite:kal16,festival:kal", "--rate-range", "0.7,1.3",
                "--pitch-range", "0.8,1.25", "--eval-fraction", "0", seed=11, workers=2),
        b.merge("data/mix-k", "data/asr-mix/k.jsonl", "data/asr-mix/h16k.jsonl",
                "data/styles/train.jsonl", "data/kal/train.jsonl"),
        b.codes("asr/12-codes", "asr", "12-lead-silence", workers=2),
        b.train("asr/12-lead-silence", "asr", "12-lead-silence",
                note="from this stage on (lead silence, chained utterances) the historic runs "
                "filled silence with the codes of -75 dBFS noise; since the stream convention "
                "was unified (dsm.streams.silence) it is the codes of digital zeros, what "
                "inference feeds: the same recipes at commit 0b4bc45 give the historic data"),
        b.ship("asr/ship-lead1", "asr", "runs/asr-lead1/model", "models/asr-lead1",
               "--dtype", "float16"),
        b.merge("data/mix-long", "data/asr-mix/long.jsonl", "data/en/train.jsonl",
                "data/en2/train.jsonl", "data/styles/train.jsonl", "data/kal/train.jsonl"),
        b.codes("asr/13-codes", "asr", "13-streams", workers=2),
        b.train("asr/13-streams", "asr", "13-streams"),
        b.merge("data/mix-long2", "data/asr-mix/long2.jsonl", "data/asr-mix/long.jsonl",
                "data/en3/train.jsonl", "data/fest/train.jsonl"),
        b.codes("asr/14-codes", "asr", "14-streams", workers=2),
        b.train("asr/14-streams", "asr", "14-streams"),
    ]
    # three draws of equalised copies, then four of slow copies, each added to the mix
    mix = "data/asr-mix/long2.jsonl"
    for draw, (stage, seed) in enumerate([("15-random-eq", 0), ("16-random-eq", 1),
                                          (None, 2)], start=1):
        suffix = "" if draw == 1 else str(draw)
        sample = f"data/asr-mix/eq-sample{suffix}.jsonl"
        merged = f"data/asr-mix/long2eq{suffix}.jsonl"
        steps += [
            b.sample(f"data/eq-sample{suffix}", sample, "data/asr-mix/long2.jsonl", 12000, seed),
            b.perturb(f"data/eq{suffix}", sample, f"data/eq{suffix}", "--random-eq", "1",
                      *(("--seed", str(seed)) if seed else ()), "--no-original"),
            b.merge(f"data/mix-long2eq{suffix}", merged, mix,
                    f"data/eq{suffix}/eq-sample{suffix}.jsonl"),
        ]
        mix = merged
        if stage is not None:
            steps += [b.codes(f"asr/{stage[:2]}-codes", "asr", stage, workers=2),
                      b.train(f"asr/{stage}", "asr", stage)]
    slow = [("17-slow", 4, "0.8,0.88"), ("18-slow", 5, "0.76,0.84"), ("19-slow", 6, "0.72,0.8"),
            ("20-slow", 7, "0.7,0.78")]
    for draw, (stage, seed, speeds) in enumerate(slow, start=1):
        suffix = "" if draw == 1 else str(draw)
        sample = f"data/asr-mix/sp-sample{suffix}.jsonl"
        merged = f"data/asr-mix/long2eq3sp{suffix}.jsonl"
        steps += [
            b.sample(f"data/sp-sample{suffix}", sample, "data/asr-mix/long2.jsonl", 8000, seed),
            b.perturb(f"data/slow{suffix}", sample, f"data/slow{suffix}", "--speeds", speeds,
                      "--no-original"),
            b.merge(f"data/mix-long2eq3sp{suffix}", merged, mix,
                    f"data/slow{suffix}/sp-sample{suffix}.jsonl"),
            b.codes(f"asr/{stage[:2]}-codes", "asr", stage, workers=2),
            b.train(f"asr/{stage}", "asr", stage),
        ]
        mix = merged
    steps.append(b.ship("asr/ship", "asr", "runs/asr-slow4/model", "models/asr",
                        "--dtype", "float16"))
    return steps


def open_text(b: Builder) -> list[Step]:
    """Real text (`dsm data text`), the open-vocabulary ASR corpus that speaks it and the
    tokenizer fitted to both."""
    tiny = ("--max-documents", "3") if b.scale.tiny else ()
    return [
        Step("data/text", ("data", "text", "--out", "data/text", "--langs", "en,fr",
                           "--sources", "fortunes,kjv,manpages-fr,debian-reference-fr,gimp-help-fr",
                           "--eval-fraction", "0.1", "--seed", "0", "--min-words", "3",
                           "--max-words", "20", "--cap", "kjv=15000", *tiny, "--quiet"),
             note="the historic open stages read text made before sentences with words in "
             "capitals were dropped and out-of-order word times redrawn (3% of the English "
             "text, 1 flite row): commit 6c42455 gives their text and corpora"),
        b.synth("data/open-en", "data/open-en", 10, "--lang", "en",
                "--engines", "espeak,flite,festival", "--rough-voices",
                "--text-file", "data/text/train.en.txt", "--eval-text-file",
                "data/text/eval.en.txt", "--text-share", "0.7", "--eval-fraction", "0.03",
                "--rate-range", "0.8,1.2", "--pitch-range", "0.9,1.1", seed=40, workers=2),
        # the model cards' held-out-text figures: held-out voices (and flite's slt, the TTS
        # voice) speaking sentences of the documents the split holds out
        b.synth("data/heldout-en", "data/heldout-en", 0.5, "--lang", "en", "--eval-fraction",
                "0.5", "--text-file", "data/text/train.en.txt", "--eval-text-file",
                "data/text/eval.en.txt", "--text-share", "1.0", seed=31),
        b.synth("data/tts-heldout", "data/tts-heldout", 0.08, "--lang", "en", "--voices",
                "flite:slt", "--eval-fraction", "0", "--text-file", "data/text/eval.en.txt",
                "--text-share", "1.0", seed=33),
        Step("data/open-tokenizer", ("data", "tokenizer", "--text", "data/text/train.en.txt",
                                     "--manifest", "data/open-en/train.jsonl",
                                     "--out", "data/open/tokenizer", "--vocab-size", "2500",
                                     "--model-type", "bpe")),
    ]


def open_asr_stages(b: Builder) -> list[Step]:
    """The open-vocabulary ASR stage, from the lexicon model of stage 20."""
    return [
        b.ship("asr/ship-lexicon", "asr", "runs/asr-slow4/model", "models/asr-lexicon",
               "--dtype", "float16"),
        b.codes("asr/21-codes", "asr", "21-open", workers=2),
        b.train("asr/21-open", "asr", "21-open"),
        b.ship("asr/ship-open", "asr", "runs/asr-open/model", "models/asr-open",
               "--dtype", "float16"),
    ]


def tts_stages(b: Builder) -> list[Step]:
    """The TTS model: one voice, two stages (the first stopped and resumed)."""
    return [
        b.synth("data/slt", "data/slt", 6, "--lang", "en", "--voices", "flite:slt",
                "--eval-fraction", "0", seed=2, workers=2),
        b.merge("data/tts-slt", "data/tts-slt/train.jsonl", "data/en-all/train.jsonl",
                "data/slt/train.jsonl", options=("--speakers", "flite:slt")),
        b.train("tts/01-slt", "tts", "01-slt", stop_after=2500,
                note="historically on the codec shipped after codec stage 3 (float16); same code "
                "space as models/codec-v1"),
        b.train("tts/01-slt-resume", "tts", "01-slt", "train.max_steps=5800", resume=True,
                note="the historic run changed its schedule when resumed: 2500 steps of a "
                "5000-step cosine schedule, then the rest of a 5800-step one"),
        b.codes("tts/02-codes", "tts", "02-new-codes"),
        b.train("tts/02-new-codes", "tts", "02-new-codes"),
        b.ship("tts/ship", "tts", "runs/tts-n/model", "models/tts"),
    ]


def open_tts_stages(b: Builder) -> list[Step]:
    """The open-vocabulary TTS stage: the same voice speaking real text, from stage 2."""
    return [
        b.ship("tts/ship-lexicon", "tts", "runs/tts-n/model", "models/tts-lexicon"),
        b.synth("data/open-slt", "data/open-slt", 5, "--lang", "en", "--voices", "flite:slt",
                "--eval-fraction", "0", "--text-file", "data/text/train.en.txt",
                "--text-share", "0.8", seed=41),
        b.codes("tts/03-codes", "tts", "03-open"),
        b.train("tts/03-open", "tts", "03-open"),
        b.ship("tts/ship-open", "tts", "runs/tts-open/model", "models/tts-open"),
    ]


def pipeline(model: str, tiny: bool = False, codec: str | None = None) -> list[Step]:
    """The ordered steps that make WORK/models/<model>; shared steps appear once."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    if model == "codec" and codec is not None:
        raise ValueError("--codec is for the asr and tts pipelines")
    b = Builder(Scale(tiny), codec)
    steps = corpora(b)
    if codec is None:
        steps += asr_mix(b) + codec_stages(b)
    else:
        steps += given_codec(b)
    if model in ("asr", "asr-open"):
        steps += ([] if codec is None else asr_mix(b)) + asr_stages(b)
    elif model in ("tts", "tts-open"):
        steps += tts_stages(b)
    if model == "asr-open":
        steps += open_text(b) + open_asr_stages(b)
    elif model == "tts-open":
        steps += open_text(b) + open_tts_stages(b)
    unique: dict[str, Step] = {}
    for step in steps:
        unique.setdefault(step.name, step)
    return list(unique.values())


def _run_dsm(argv: list[str]) -> int:
    from dsm.cli import main as dsm_main

    try:
        return dsm_main(argv)
    except SystemExit as stop:  # argparse and a few commands exit
        return stop.code if isinstance(stop.code, int) else 1


def run(steps: list[Step], work: Path, log: Callable[[str], None] = print,
        run_dsm: Callable[[list[str]], int] = _run_dsm) -> None:
    """Run `steps` in `work` (created), skipping those already done; raises PipelineError
    naming the first step that fails."""
    work.mkdir(parents=True, exist_ok=True)
    done_dir = work / ".pipeline"
    done_dir.mkdir(exist_ok=True)
    here = Path.cwd()
    os.chdir(work)
    try:
        for index, step in enumerate(steps, start=1):
            marker = done_dir / (step.name.replace("/", "__") + ".done")
            head = f"[{index}/{len(steps)}] {step.name}"
            if marker.exists():
                log(f"{head}: done before, skipped")
                continue
            log(f"{head}: dsm {' '.join(step.argv)}")
            start = time.monotonic()
            try:
                code = run_dsm(list(step.argv))
            except Exception as error:
                raise PipelineError(f"step {index} ({step.name}) failed: {error!r}; "
                                    f"command: dsm {' '.join(step.argv)}") from error
            if code != 0:
                raise PipelineError(f"step {index} ({step.name}) failed with exit code {code}; "
                                    f"command: dsm {' '.join(step.argv)}")
            marker.write_text(" ".join(step.argv) + "\n")
            log(f"{head}: ok in {time.monotonic() - start:.1f} s")
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsm.recipes.pipelines.run",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=MODELS, help="the shipped model to reproduce")
    parser.add_argument("--work", type=Path, required=True,
                        help="work directory: corpora, runs, and models/<name> at the end")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny corpora, 1-2 training steps per stage: checks the pipeline "
                        "runs end to end (same config.json), not the model's quality")
    parser.add_argument("--codec", metavar="DIR",
                        help="asr, tts: use this codec instead of running the codec stages")
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    args = parser.parse_args(argv)
    codec = str(Path(args.codec).resolve()) if args.codec else None
    try:
        steps = pipeline(args.model, args.tiny, codec)
    except ValueError as error:
        parser.error(str(error))
    if args.list:
        for index, step in enumerate(steps, start=1):
            print(f"{index:3d} {step.name}: dsm {' '.join(step.argv)}")
            if step.note:
                print(f"      note: {step.note}")
        return 0
    try:
        run(steps, args.work.resolve())
    except PipelineError as error:
        print(f"pipeline {args.model}: {error}", file=sys.stderr)
        return 1
    print(f"pipeline {args.model}: done; model in {args.work / 'models' / args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
