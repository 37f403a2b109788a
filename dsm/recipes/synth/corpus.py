"""Synthesized, word-aligned speech corpora: speakers, timing refinement, manifest writing.

A corpus is a folder:

    audio/000/000000.wav ...        mono 16-bit PCM at `sample_rate` (default 24 kHz);
                                    parallel sets: 000000.en.wav and 000000.fr.wav
    train.jsonl, eval.jsonl         one row per utterance (parallel sets: train.en.jsonl,
                                    train.fr.jsonl, eval.en.jsonl, eval.fr.jsonl; row k of
                                    the .en and .fr files is the same pair, same `id`)
    voices.json                     every speaker with its split (train / eval) and settings
    corpus.json                     how it was made (arguments, seed, totals)

Rows: `{audio, duration, text, lang, speaker, words: [{word, start, end}], id}`, with
`audio` relative to the manifest, times in seconds, `" ".join(words) == text`.

Speakers. A speaker is an engine voice: `espeak:<accent>+<variant>` (accent = an espeak
language voice such as en-gb-scotland, variant = a voice-quality variant such as f3) or
`flite:<voice>`, or, when asked for with `engines`, `festival:<voice>` (ked, slt_hts; see
synth_festival). Each speaker has a base speaking rate and pitch drawn from its name (so it
is the same voice in every corpus), jittered a little per utterance. Evaluation speakers
are held out entirely: espeak variants m4, f3 and klatt3 (with every accent) and the flite
voice rms are never used in the train split, so eval measures generalisation to unseen
voices; the train split uses the other variants and awb, slt. Festival is off by default
(corpora made before it existed keep their seeds' content); its voices ked and slt_hts
train, and it has no voice to hold out. The kal diphone voices (flite's kal16, Festival's
kal) are left out unless asked for with `rough_voices`: their unit labels put the audible
start of a word after a pause up to 130 ms away from its phone boundaries, and their pauses
hold breath noises. That is too rough for TTS or timing studies, but fine for training ASR,
whose text lags the audio by 0.5 s, and they are one more (American male) speaker.

`voices` (fnmatch patterns over speaker ids, e.g. 'flite:slt') keeps a subset, e.g. one
voice for a TTS set; a split left without any speaker is an error.

Word times. Onsets come from the engine (espeak word events, flite's utterance
relations). They are then refined on the clean signal with one rule: when the onset falls
in silence (a pause followed by a stop closure, e.g. 'Peter' after a full stop), the onset
moves forward to the first audible frame, at most 250 ms later. Ends: a word ends at the
next word's onset (or the utterance end; for flite at its last phone's end if earlier),
minus the silence measured on the signal before that point. Silence is a 10 ms frame
(5 ms hop) more than 40 dB below the utterance's loudest frame.

Measured accuracy (20 minutes of en, fr and en-fr corpora, against an independent energy
detector: the one in tests/recipes/test_synth.py): onsets of words after a pause are within 7 ms
(p95; max 8 ms) of the signal's rise for espeak and 9 ms (p95; max 56 ms) for flite; ends
before a pause within 19 ms (espeak en, p95) and 48 ms (flite, p95) of the fall. The
onset rule moves 33% of espeak onsets (median 10 ms, at most 64 ms) and 7% of flite's.

Determinism: utterance i is made from `numpy.random.default_rng([seed, i, kind])` alone,
so the same seed gives the same text, speakers, audio bytes and manifest, whatever the
number of worker processes.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import json
import multiprocessing
import os
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from dsm.recipes.synth import espeak as synth_espeak
from dsm.recipes.synth import festival as synth_festival
from dsm.recipes.synth import flite as synth_flite
from dsm.recipes.synth.espeak import EngineUnavailable, Spoken, SynthesisError
from dsm.recipes.synth.text import LANGS, sentence_pair

ENGINES = ("espeak", "flite", "festival")
DEFAULT_ENGINES = ("espeak", "flite")

ESPEAK_ACCENTS = {
    "en": ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc"),
    "fr": ("fr", "fr-be", "fr-ch"),
}
ESPEAK_TRAIN_VARIANTS = ("m1", "m2", "m3", "m5", "m6", "m7", "f1", "f2", "f4", "f5", "klatt",
                         "klatt2")
ESPEAK_EVAL_VARIANTS = ("m4", "f3", "klatt3")
FLITE_TRAIN_VOICES = ("awb", "slt")
FLITE_EVAL_VOICES = ("rms",)
FESTIVAL_TRAIN_VOICES = ("ked", "slt_hts")
FESTIVAL_EVAL_VOICES: tuple[str, ...] = ()
# share of English utterances spoken by flite or festival (not espeak) when espeak and
# another engine run
OTHER_ENGINES_SHARE = 0.35
# train voices with rough word starts and breathy pauses (see above): only on request
ROUGH_FLITE_VOICES = ("kal16",)
ROUGH_FESTIVAL_VOICES = ("kal",)
FIXED_PITCH_VOICES = ("rms", "slt_hts")  # the engine ignores F0 settings for these voices

# per-utterance rate and pitch factors (times the speaker's base), drawn uniformly; wider
# ranges (`dsm data synth --rate-range/--pitch-range`) give one voice many speaking styles,
# rendered natively by the engine rather than by stretching the signal afterwards
RATE_JITTER = (0.92, 1.08)
PITCH_JITTER = (0.95, 1.05)
FACTOR_LIMITS = (0.5, 2.0)  # beyond these the engines distort or refuse

SILENCE_DB = 40.0           # a frame this far below the loudest frame is silence
FRAME_S, HOP_S = 0.010, 0.005
MAX_ONSET_SHIFT_S = 0.25
MIN_WORD_S = 0.02


class CorpusError(ValueError):
    """Bad corpus request: unknown language, no audio asked for, unusable output folder."""


@dataclass(frozen=True)
class Speaker:
    engine: str        # "espeak" | "flite" | "festival"
    voice: str         # "en-gb+f3" | "slt"
    lang: str
    split: str         # "train" | "eval"
    rate: float        # speaking-rate factor (1.0 = engine default)
    pitch: float       # pitch factor (1.0 = engine default)
    pitch_range: int   # espeak intonation range 0..100 (unused by flite)

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.voice}"


def _speaker(engine: str, voice: str, lang: str, split: str) -> Speaker:
    rng = np.random.default_rng(zlib.crc32(f"{engine}:{voice}".encode()))
    rate = float(rng.uniform(0.85, 1.2))
    pitch = 1.0 if voice in FIXED_PITCH_VOICES else float(rng.uniform(0.8, 1.2))
    return Speaker(engine, voice, lang, split, round(rate, 3), round(pitch, 3),
                   int(rng.integers(30, 80)))


@functools.cache
def speakers(lang: str, engines: tuple[str, ...] = ENGINES,
             rough_voices: bool = False) -> tuple[Speaker, ...]:
    """All speakers of `lang` for these engines, train ones first (with `rough_voices`,
    the kal voices train too)."""
    _check_lang_engines(lang, engines)
    flite_train = FLITE_TRAIN_VOICES + (ROUGH_FLITE_VOICES if rough_voices else ())
    festival_train = FESTIVAL_TRAIN_VOICES + (ROUGH_FESTIVAL_VOICES if rough_voices else ())
    result: list[Speaker] = []
    for split, variants, flite_voices, festival_voices in (
            ("train", ESPEAK_TRAIN_VARIANTS, flite_train, festival_train),
            ("eval", ESPEAK_EVAL_VARIANTS, FLITE_EVAL_VOICES, FESTIVAL_EVAL_VOICES)):
        if "espeak" in engines:
            result += [_speaker("espeak", f"{accent}+{variant}", lang, split)
                       for accent in ESPEAK_ACCENTS[lang] for variant in variants]
        if "flite" in engines and lang == "en":
            result += [_speaker("flite", voice, lang, split) for voice in flite_voices]
        if "festival" in engines and lang == "en":
            result += [_speaker("festival", voice, lang, split) for voice in festival_voices]
    return tuple(result)


def _check_lang_engines(lang: str, engines: tuple[str, ...]) -> None:
    if lang not in LANGS:
        raise CorpusError(f"unknown language {lang!r}: expected one of {', '.join(LANGS)}")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise CorpusError(f"unknown engines {unknown or engines}: expected some of {ENGINES}")
    if lang == "fr" and "espeak" not in engines:
        raise CorpusError("French needs espeak: flite and festival have no French voices")


# ---------------------------------------------------------------- engines (one per process)

_ENGINE_CACHE: dict[str, object] = {}


def engine(name: str):
    """The process's espeak, flite or festival engine, loaded on first use."""
    if name not in _ENGINE_CACHE:
        if name == "espeak":
            _ENGINE_CACHE[name] = synth_espeak.EspeakEngine(synth_espeak.LIBRARY)
        elif name == "flite":
            _ENGINE_CACHE[name] = synth_flite.FliteEngine(synth_flite.LIBRARY)
        elif name == "festival":
            _ENGINE_CACHE[name] = synth_festival.FestivalEngine(synth_festival.PROGRAM)
        else:
            raise CorpusError(f"unknown engine {name!r}")
    return _ENGINE_CACHE[name]


def check_engines(engines: tuple[str, ...], rough_voices: bool = False) -> None:
    """Raise EngineUnavailable (with an install hint) unless every engine loads (and, for
    festival, every voice: its voices come in separate packages)."""
    for name in engines:
        loaded = engine(name)
        if name == "festival":
            rough = ROUGH_FESTIVAL_VOICES if rough_voices else ()
            for voice in FESTIVAL_TRAIN_VOICES + FESTIVAL_EVAL_VOICES + rough:
                loaded.check_voice(voice)


def _in_fresh_child(function, *args):
    """Run `function(*args)` in a forked child and return its result.

    Both engines keep state from one utterance to the next (espeak's pitch flutter phase
    and pause state, flite's excitation noise), so the same request gives slightly
    different audio depending on what was spoken before. The engines are loaded in this
    process but only ever used in throwaway children, so every utterance starts from the
    same just-loaded state: a corpus is identical whatever the order and the worker count.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: speak, send the result, and always leave here (never return)
        status = 0
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps((True, function(*args)))
            except BaseException as error:  # noqa: BLE001 - handed to the parent
                payload = pickle.dumps((False, error))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001 - e.g. the parent is gone (broken pipe)
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise SynthesisError(f"speech engine process died (wait status {status})")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def _speak_here(speaker: Speaker, text: str, rate: float, pitch: float,
                word_gap: int) -> Spoken:
    if speaker.engine == "espeak":
        return engine("espeak").speak(
            text, speaker.voice, rate=round(175 * rate), pitch=round(50 + 100 * (pitch - 1.0)),
            pitch_range=speaker.pitch_range, word_gap=word_gap)
    return engine(speaker.engine).speak(text, speaker.voice, stretch=1.0 / rate, pitch=pitch)


def speak(speaker: Speaker, text: str, rate_jitter: float = 1.0, pitch_jitter: float = 1.0,
          word_gap: int = 0) -> Spoken:
    """`text` spoken by `speaker`, from a fresh engine state (see `_in_fresh_child`)."""
    request = (speaker, text, speaker.rate * rate_jitter, speaker.pitch * pitch_jitter, word_gap)
    if speaker.engine == "festival":  # its own process, reset by every request
        return _speak_here(*request)
    engine(speaker.engine)  # loaded here once, used only in children
    return _in_fresh_child(_speak_here, *request)


# ---------------------------------------------------------------- word times on the signal


def frame_levels_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level in dB of 10 ms frames every 5 ms: frame k covers [k*hop, k*hop + 10 ms)."""
    win, hop = round(FRAME_S * sample_rate), round(HOP_S * sample_rate)
    if len(audio) < win:
        return np.full(1, -200.0)
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop]  # [F, win]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-10)


def word_times(audio: np.ndarray, sample_rate: int, onsets: list[float],
               engine_ends: list[float] | None = None) -> list[tuple[float, float]]:
    """(start, end) in seconds for each word: engine onsets moved out of leading silence,
    ends at the last audible frame before the next word (see the module docstring)."""
    levels = frame_levels_db(audio, sample_rate)
    audible = levels > levels.max() - SILENCE_DB  # [F]
    duration = len(audio) / sample_rate
    win = FRAME_S

    def frame_at(t: float) -> int:
        return min(max(int(round(t / HOP_S)), 0), len(audible) - 1)

    starts = []
    for i, onset in enumerate(onsets):
        onset = min(max(onset, 0.0), duration)
        limit = min(onset + MAX_ONSET_SHIFT_S, onsets[i + 1] if i + 1 < len(onsets) else duration)
        k = frame_at(onset)
        if not audible[k]:
            while k < len(audible) - 1 and not audible[k] and (k + 1) * HOP_S < limit:
                k += 1
            if audible[k]:
                onset = max(onset, k * HOP_S + HOP_S / 2)
        starts.append(onset)

    times = []
    for i, start in enumerate(starts):
        bound = starts[i + 1] if i + 1 < len(starts) else duration
        if engine_ends is not None:
            bound = min(bound, max(engine_ends[i], start + MIN_WORD_S))
        floor = start + MIN_WORD_S
        # the last frame that ends at least one hop before the bound (frames straddling the
        # bound would hear the next word)
        k = int(np.floor((bound - win) / HOP_S)) - 1
        if k < 0 or audible[min(k, len(audible) - 1)]:
            end = bound  # connected speech: the word runs into the next one
        else:
            while k > 0 and not audible[k] and k * HOP_S + win > floor:
                k -= 1
            end = min(bound, max(floor, k * HOP_S + win))
        times.append((start, end))
    return times


# ---------------------------------------------------------------- one utterance


@dataclass
class Utterance:
    lang: str
    text: str
    speaker: str
    split: str
    audio: np.ndarray                       # [N] int16 at the corpus sample rate
    words: list[dict] = field(default_factory=list)


def _render(speaker: Speaker, text: str, rng: np.random.Generator, sample_rate: int,
            rate_range: tuple[float, float] = RATE_JITTER,
            pitch_range: tuple[float, float] = PITCH_JITTER) -> Utterance:
    rate_jitter = float(rng.uniform(*rate_range))
    pitch_jitter = float(rng.uniform(*pitch_range))
    word_gap = int(rng.integers(1, 5)) if rng.random() < 0.15 else 0
    spoken = speak(speaker, text, rate_jitter, pitch_jitter, word_gap)
    if any(b < a for a, b in zip(spoken.onsets, spoken.onsets[1:])):
        # e.g. flite reading "I AM" as letters maps the token back to the utterance start
        raise SynthesisError(f"{speaker.id} timed the words of {text!r} out of order")
    audio = spoken.audio
    if spoken.sample_rate != sample_rate:
        audio = soxr.resample(audio, spoken.sample_rate, sample_rate, quality="HQ")
    audio = np.asarray(audio, dtype=np.float32)
    times = word_times(audio, sample_rate, spoken.onsets, spoken.ends)
    # level, leading / trailing silence and a faint noise floor vary per utterance
    peak = float(np.abs(audio).max()) or 1.0
    audio = audio * (10 ** (rng.uniform(-12.0, -1.0) / 20) / peak)
    lead, tail = rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.7)
    lead_n, tail_n = round(lead * sample_rate), round(tail * sample_rate)
    audio = np.concatenate([np.zeros(lead_n, np.float32), audio, np.zeros(tail_n, np.float32)])
    noise_db = rng.uniform(-85.0, -65.0)
    audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (noise_db / 20)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    offset = lead_n / sample_rate
    words = [{"word": w, "start": round(s + offset, 3), "end": round(e + offset, 3)}
             for w, (s, e) in zip(text.split(), times)]
    return Utterance(speaker.lang, text, speaker.id, speaker.split, pcm, words)


@dataclass(frozen=True)
class Job:
    seed: int
    index: int
    lang: str
    parallel: bool
    engines: tuple[str, ...]
    eval_fraction: float
    sample_rate: int
    voices: tuple[str, ...] = ()  # fnmatch patterns over speaker ids; empty: all
    rate_range: tuple[float, float] = RATE_JITTER    # per-utterance factor, uniform
    pitch_range: tuple[float, float] = PITCH_JITTER
    rough_voices: bool = False
    # sentence files (one a line, e.g. from `dsm data text`): train utterances draw from
    # text_files, eval utterances from eval_text_files, each with probability text_share;
    # the rest, and all of a split without files, use generated sentences
    text_files: tuple[str, ...] = ()
    eval_text_files: tuple[str, ...] = ()
    text_share: float = 0.5


@functools.lru_cache(maxsize=16)
def read_sentence_files(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The non-empty lines of these files, in order (read once per process)."""
    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            lines.extend(" ".join(line.split()) for line in handle if line.strip())
    return tuple(lines)


def check_text_files(paths: tuple[str, ...], lang: str) -> int:
    """The number of sentences in these files, or a CorpusError naming what is wrong:
    a missing or empty file, or one named for another language ('train.fr.txt')."""
    for path in paths:
        parts = Path(path).name.split(".")
        if len(parts) >= 3 and parts[-2] in LANGS and parts[-2] != lang:
            raise CorpusError(f"text file {path} is named for language {parts[-2]}, the "
                              f"corpus is {lang}")
        if not Path(path).is_file():
            raise CorpusError(f"text file {path} not found (make one with dsm data text)")
    try:
        count = len(read_sentence_files(paths))
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(f"cannot read text files {', '.join(paths)}: {error}") from error
    if count == 0:
        raise CorpusError(f"text files {', '.join(paths)} hold no sentence")
    return count


def _draw_texts(job: Job, split: str, rng: np.random.Generator) -> dict[str, str]:
    files = job.text_files if split == "train" else job.eval_text_files
    if files and rng.random() < job.text_share:
        lines = read_sentence_files(files)
        return {job.lang: lines[int(rng.integers(len(lines)))]}
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    pairs = [sentence_pair(rng) for _ in range(count)]
    return {"en": " ".join(p[0] for p in pairs), "fr": " ".join(p[1] for p in pairs)}


def select_speakers(lang: str, engines: tuple[str, ...], voices: tuple[str, ...] = (),
                    rough_voices: bool = False) -> tuple[Speaker, ...]:
    """The speakers of `lang` (English: these engines; French: espeak) that match one of
    the `voices` patterns (e.g. 'espeak:en-us+*', 'flite:slt'); all when none given."""
    pool = speakers(lang, engines if lang == "en" else ("espeak",), rough_voices)
    if not voices:
        return pool
    return tuple(s for s in pool if any(fnmatch.fnmatchcase(s.id, p) for p in voices))


def _pick_speaker(pool: tuple[Speaker, ...], lang: str, split: str, rng: np.random.Generator,
                  engines: tuple[str, ...]) -> Speaker:
    candidates = [s for s in pool if s.lang == lang and s.split == split]
    if lang == "en" and "espeak" in engines and len(engines) > 1:
        use_other = rng.random() < OTHER_ENGINES_SHARE
        candidates = [s for s in candidates if (s.engine != "espeak") == use_other] or candidates
    return candidates[int(rng.integers(len(candidates)))]


def make_item(job: Job) -> list[Utterance]:
    """Utterance `job.index` (two for a parallel pair: English then French)."""
    rng = np.random.default_rng([job.seed, job.index, int(job.parallel)])
    split = "eval" if rng.random() < job.eval_fraction else "train"
    langs = ("en", "fr") if job.parallel else (job.lang,)
    pools = {lang: select_speakers(lang, job.engines, job.voices, job.rough_voices)
             for lang in langs}
    chosen = {lang: _pick_speaker(pools[lang], lang, split, rng, job.engines) for lang in langs}
    last_error: Exception | None = None
    for _ in range(8):  # a text the engine cannot time is replaced by a new draw
        texts = _draw_texts(job, split, rng)
        try:
            return [_render(chosen[lang], texts[lang], rng, job.sample_rate, job.rate_range,
                            job.pitch_range) for lang in langs]
        except SynthesisError as error:
            last_error = error
    raise SynthesisError(f"utterance {job.index}: no text could be timed ({last_error})")


# ---------------------------------------------------------------- the corpus


@dataclass
class CorpusSummary:
    out: str
    seconds: dict[str, float]       # per split (source side for parallel sets)
    utterances: dict[str, int]
    manifests: list[str]


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CorpusError(f"output folder {out} is not writable: {error}") from error
    existing = sorted(p.name for p in out.glob("*.jsonl")) + (
        ["corpus.json"] if (out / "corpus.json").exists() else [])
    if existing and not overwrite:
        raise CorpusError(f"output folder {out} already holds a corpus ({', '.join(existing)}); "
                          "choose another folder or pass --overwrite")
    for name in existing:
        (out / name).unlink()


def _items(make_job, workers: int) -> Iterator[list[Utterance]]:
    """Items 0, 1, 2, ... in order; the caller stops when it has enough."""
    if workers <= 1:
        for index in itertools.count():
            yield make_item(make_job(index))
        return
    context = multiprocessing.get_context("spawn")
    batch = 8 * workers  # bounded look-ahead: at most one batch is made in vain
    with context.Pool(workers) as pool:
        for first in itertools.count(0, batch):
            jobs = [make_job(index) for index in range(first, first + batch)]
            yield from pool.imap(make_item, jobs, chunksize=1)


def check_factor_range(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    """`bounds` as a (low, high) factor range inside FACTOR_LIMITS, or a CorpusError."""
    low, high = (float(b) for b in bounds)
    if not FACTOR_LIMITS[0] <= low <= high <= FACTOR_LIMITS[1]:
        raise CorpusError(f"{name} must be LOW,HIGH with {FACTOR_LIMITS[0]} <= LOW <= HIGH <= "
                          f"{FACTOR_LIMITS[1]}, got {low:g},{high:g}")
    return low, high


def synthesize_corpus(out: str | os.PathLike, lang: str = "en", hours: float = 1.0,
                      seed: int = 0, sample_rate: int = 24000, parallel: bool = False,
                      engines: tuple[str, ...] = DEFAULT_ENGINES, eval_fraction: float = 0.1,
                      workers: int = 1, overwrite: bool = False, progress: bool = True,
                      voices: tuple[str, ...] = (),
                      rate_range: tuple[float, float] = RATE_JITTER,
                      pitch_range: tuple[float, float] = PITCH_JITTER,
                      rough_voices: bool = False, text_files: tuple[str, ...] = (),
                      eval_text_files: tuple[str, ...] = (),
                      text_share: float = 0.5) -> CorpusSummary:
    """Write a corpus of about `hours` hours (source side for `parallel`) into `out`.
    Each utterance's rate and pitch are its speaker's base times a factor drawn uniformly
    from `rate_range` and `pitch_range` (voices with a fixed pitch ignore the latter).
    `rough_voices` adds the kal voices to the train split (ASR data; see the module doc).
    With `text_files` (`eval_text_files`), a `text_share` of the train (eval) utterances
    speak one sentence of those files instead of generated ones."""
    engines = tuple(dict.fromkeys(engines))
    if parallel:
        lang = "en"
    _check_lang_engines(lang, engines)
    if not hours > 0:
        raise CorpusError(f"--hours must be positive, got {hours}")
    if not 0.0 <= eval_fraction < 1.0:
        raise CorpusError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    if sample_rate < 8000:
        raise CorpusError(f"sample rate {sample_rate} Hz is too low (at least 8000)")
    if workers < 1:
        raise CorpusError(f"workers must be at least 1, got {workers}")
    text_files, eval_text_files = tuple(text_files), tuple(eval_text_files)
    if (text_files or eval_text_files) and parallel:
        raise CorpusError("sentence files have no translations: they cannot make a parallel "
                          "set")
    if (text_files or eval_text_files) and not 0.0 < text_share <= 1.0:
        raise CorpusError(f"text share must be in (0, 1], got {text_share}")
    for files in (text_files, eval_text_files):
        if files:
            check_text_files(files, lang)
    if set(text_files) & set(eval_text_files):
        raise CorpusError("the same file cannot feed both train and eval utterances")
    rate_range = check_factor_range("rate range", rate_range)
    pitch_range = check_factor_range("pitch range", pitch_range)
    langs = ("en", "fr") if parallel else (lang,)
    for lg in langs:
        chosen = select_speakers(lg, engines, voices, rough_voices)
        for split in ("train", "eval") if eval_fraction > 0 else ("train",):
            if not any(s.split == split for s in chosen) and not voices:
                raise CorpusError(
                    f"no {lg} {split} speaker among engines {','.join(engines)} (festival "
                    "has no held-out voice: add flite or espeak, or set --eval-fraction 0)")
            if not any(s.split == split for s in chosen):
                rough = not rough_voices and any(
                    s.split == split for s in select_speakers(lg, engines, voices, True))
                hint = ("the kal voices train only with --rough-voices" if rough else
                        "eval voices are held out: include some, or set --eval-fraction 0")
                raise CorpusError(
                    f"no {lg} {split} speaker matches --voices {','.join(voices)} ({hint}); "
                    "`dsm data synth --list-voices` lists the speakers")
    out = Path(out)
    check_engines(engines, rough_voices)  # before touching the folder: a missing engine loses nothing
    _prepare_out(out, overwrite)

    target = hours * 3600.0
    suffix = {lg: (f".{lg}" if parallel else "") for lg in langs}
    manifests = {(split, lg): out / f"{split}{suffix[lg]}.jsonl"
                 for split in ("train", "eval") for lg in langs}
    files = {key: open(path, "w", encoding="utf-8") for key, path in manifests.items()}
    seconds = {"train": 0.0, "eval": 0.0}
    counts = {"train": 0, "eval": 0}

    def make_job(index: int) -> Job:
        return Job(seed, index, lang, parallel, engines, eval_fraction, sample_rate, voices,
                   rate_range, pitch_range, rough_voices, text_files, eval_text_files,
                   text_share)

    bar = tqdm(total=round(target), unit="s", desc=f"synth {'en→fr' if parallel else lang}",
               disable=not progress, dynamic_ncols=True)
    total = 0.0
    items = _items(make_job, workers)
    try:
        for index, utterances in enumerate(items):
            item_id = f"{index:06d}"
            for utt in utterances:
                name = f"{item_id}{suffix[utt.lang]}.wav"
                relative = Path("audio") / item_id[:3] / name
                (out / relative.parent).mkdir(parents=True, exist_ok=True)
                sf.write(out / relative, utt.audio, sample_rate, subtype="PCM_16")
                row = {"audio": relative.as_posix(),
                       "duration": round(len(utt.audio) / sample_rate, 4),
                       "text": utt.text, "lang": utt.lang, "speaker": utt.speaker,
                       "words": utt.words, "id": item_id}
                files[(utt.split, utt.lang)].write(json.dumps(row, ensure_ascii=False) + "\n")
            source = len(utterances[0].audio) / sample_rate
            seconds[utterances[0].split] += source
            counts[utterances[0].split] += 1
            total += source
            bar.update(round(total) - bar.n)
            if total >= target:
                break
    finally:
        items.close()  # stops the worker pool now, not at garbage collection
        bar.close()
        for handle in files.values():
            handle.close()

    voices_used = {split: [dict(asdict(s), id=s.id) for lg in langs
                           for s in select_speakers(lg, engines, voices, rough_voices)
                           if s.split == split]
                   for split in ("train", "eval")}
    voices_used["held_out"] = ("eval speakers never occur in the train split: espeak variants "
                          f"{', '.join(ESPEAK_EVAL_VARIANTS)} and flite "
                          f"{', '.join(FLITE_EVAL_VOICES)}")
    (out / "voices.json").write_text(json.dumps(voices_used, indent=1, ensure_ascii=False) + "\n")
    summary = CorpusSummary(str(out), {k: round(v, 3) for k, v in seconds.items()}, counts,
                            sorted(p.name for p in manifests.values()))
    meta = {"lang": "en-fr" if parallel else lang, "hours": hours, "seed": seed,
            "sample_rate": sample_rate, "parallel": parallel, "engines": list(engines),
            "eval_fraction": eval_fraction, "voices": list(voices),
            "rate_range": list(rate_range), "pitch_range": list(pitch_range),
            "rough_voices": rough_voices, "seconds": summary.seconds,
            **({"text_files": list(text_files), "eval_text_files": list(eval_text_files),
                "text_share": text_share} if text_files or eval_text_files else {}),
            "utterances": summary.utterances, "manifests": summary.manifests}
    (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
    return summary


__all__ = ["CorpusError", "CorpusSummary", "EngineUnavailable", "Speaker", "SynthesisError",
           "Utterance",
           "check_engines", "make_item", "speakers", "synthesize_corpus", "word_times"]
