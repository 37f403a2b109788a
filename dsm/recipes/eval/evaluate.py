"""Score a model's outputs against a reference manifest: ASR (WER, CER, emission latency),
translation (BLEU), codec (SI-SNR, mel distance, STOI), TTS (intelligibility, first audio).
The output format is `dsm eval`'s (see dsm/commands/eval.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsm.recipes.data.manifest import ManifestError, ManifestRow, read_manifest, summarize_skipped
from dsm.recipes.eval import metrics as M
from dsm.recipes.eval.outputs import EvalError, Output, pair_outputs, read_outputs, resolve_path

KINDS = ("asr", "tts", "codec", "translation")


@dataclass
class EvalResult:
    """Corpus figures (`summary`) and one dict of figures per utterance."""

    kind: str
    summary: dict[str, float | int]
    utterances: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": _jsonable(self.summary),
                "utterances": [_jsonable(u) for u in self.utterances]}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null (JSON has neither)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in values.items()}


def _key(row: ManifestRow) -> str:
    return row.id if row.id is not None else row.audio


def _field(output: Output, name: str, kind: type, source: str) -> Any:
    if name not in output:
        raise EvalError(f"{source}:{output.get('_line', '?')}: output has no '{name}'")
    value = output[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EvalError(f"{source}:{output.get('_line', '?')}: '{name}' must be a "
                        f"{kind.__name__}, got {value!r}")
    return value


def _load_wav(path: str, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    from dsm.audio_io import AudioFileError, read_audio_with_rate

    try:
        mono, rate = read_audio_with_rate(path, sample_rate)
    except AudioFileError as error:
        raise EvalError(str(error)) from None
    return mono.astype(np.float64), rate


# ------------------------------------------------------------------------------ metrics per kind


def _text_summary(refs: list[str], hyps: list[str], prefix: str = "") -> dict[str, float | int]:
    words = [M.word_errors(r, h) for r, h in zip(refs, hyps)]
    chars = [M.char_errors(r, h) for r, h in zip(refs, hyps)]
    ref_words = sum(c.reference_length for c in words)
    return {
        f"{prefix}wer": sum(c.errors for c in words) / ref_words if ref_words else math.nan,
        f"{prefix}cer": (sum(c.errors for c in chars) / max(1, sum(c.reference_length for c in chars))),
        f"{prefix}substitutions": sum(c.substitutions for c in words),
        f"{prefix}deletions": sum(c.deletions for c in words),
        f"{prefix}insertions": sum(c.insertions for c in words),
        f"{prefix}reference_words": ref_words,
    }


def evaluate_asr(rows: Sequence[ManifestRow], outputs: Sequence[Output | None],
                 source: str = "outputs", vocabulary: set[str] | None = None) -> EvalResult:
    """WER/CER per utterance and pooled; word emission latency where times are given; with
    `vocabulary` (the training text's words), the WER of in-vocabulary and of
    out-of-vocabulary reference words apart (`errors_by_vocabulary`)."""
    refs, hyps, utterances, all_latencies = [], [], [], []
    split: list[M.VocabularyErrors] = []
    for row, output in zip(rows, outputs, strict=True):
        text = "" if output is None else _field(output, "text", str, source)
        refs.append(row.text)
        hyps.append(text)
        utterance: dict[str, Any] = {
            "id": _key(row), "wer": M.word_errors(row.text, text).rate,
            "cer": M.char_errors(row.text, text).rate, "missing": output is None,
        }
        if vocabulary is not None:
            split.append(M.errors_by_vocabulary(row.text, text, vocabulary))
            utterance["oov_words"] = split[-1].oov_words
        if output is not None and output.get("words") and row.words:
            emitted = []
            for index, word in enumerate(output["words"]):
                if not isinstance(word, dict) or "word" not in word or "time" not in word:
                    raise EvalError(f"{source}:{output['_line']}: words[{index}] needs 'word' "
                                    "and 'time' (emission time, seconds)")
                emitted.append((str(word["word"]), float(word["time"])))
            reference = [M.TimedWord(w.word, w.start, w.end) for w in row.words]
            latencies = M.word_emission_latencies(reference, emitted)
            all_latencies.extend(latencies)
            utterance["latency_mean"] = M.summarize(latencies)["mean"]
        utterances.append(utterance)
    summary = _text_summary(refs, hyps)
    latency = M.summarize(all_latencies)
    summary.update({
        "utterances": len(rows), "missing": sum(o is None for o in outputs),
        "latency_mean_s": latency["mean"], "latency_median_s": latency["median"],
        "latency_p90_s": latency["p90"], "latency_words": latency["count"],
    })
    if vocabulary is not None:
        summary.update(_vocabulary_summary(split))
    return EvalResult("asr", summary, utterances)


def _vocabulary_summary(split: Sequence[M.VocabularyErrors]) -> dict[str, float | int]:
    known = sum(s.in_vocabulary_words for s in split)
    unknown = sum(s.oov_words for s in split)
    return {
        "iv_wer": sum(s.in_vocabulary_errors for s in split) / known if known else math.nan,
        "oov_wer": sum(s.oov_errors for s in split) / unknown if unknown else math.nan,
        "oov_rate": unknown / (known + unknown) if known + unknown else math.nan,
        "iv_words": known, "oov_words": unknown,
        "split_insertions": sum(s.insertions for s in split),
    }


def evaluate_translation(rows: Sequence[ManifestRow], outputs: Sequence[Output | None],
                         source: str = "outputs") -> EvalResult:
    """Corpus BLEU and sentence BLEU against the target-language manifest's text."""
    refs = [row.text for row in rows]
    hyps = ["" if o is None else _field(o, "text", str, source) for o in outputs]
    utterances = [
        {"id": _key(row), "bleu": M.sentence_bleu(ref, hyp), "missing": output is None,
         "hyp": hyp}
        for row, ref, hyp, output in zip(rows, refs, hyps, outputs)
    ]
    summary: dict[str, float | int] = {
        "bleu": M.corpus_bleu(refs, hyps), "utterances": len(rows),
        "missing": sum(o is None for o in outputs),
    }
    return EvalResult("translation", summary, utterances)


def evaluate_codec(rows: Sequence[ManifestRow], outputs: Sequence[Output | None],
                   source: str = "outputs") -> EvalResult:
    """SI-SNR, mel distance and STOI of each decoded file against the manifest audio."""
    utterances = []
    for row, output in zip(rows, outputs, strict=True):
        if output is None:
            raise EvalError(f"{source}: no decoded audio for manifest row {_key(row)!r}")
        reference, rate = _load_wav(row.audio)
        decoded, _ = _load_wav(resolve_path(output, _field(output, "decoded", str, source)), rate)
        utterances.append({
            "id": _key(row), "si_snr_db": M.si_snr(decoded, reference),
            "mel_distance": M.mel_distance(decoded, reference, rate),
            "stoi": M.stoi(decoded, reference, rate),
        })
    summary: dict[str, float | int] = {"utterances": len(utterances)}
    for name in ("si_snr_db", "mel_distance", "stoi"):
        summary[name] = float(np.mean([u[name] for u in utterances])) if utterances else math.nan
    return EvalResult("codec", summary, utterances)


def evaluate_tts(rows: Sequence[ManifestRow], outputs: Sequence[Output | None],
                 source: str = "outputs",
                 transcribe: Callable[[np.ndarray, int], str] | None = None) -> EvalResult:
    """Intelligibility (WER/CER of an independent ASR's transcript of the speech against
    the text it was asked to say) and time to first audio.

    Each output gives its "transcript", or, when `transcribe(samples, sample_rate)` is
    given, its "wav" is transcribed here. Outputs that give a "reference_transcript" (the
    same recognizer on the manifest's own audio) add its WER and CER as
    reference_audio_wer and reference_audio_cer: the recognizer's floor.
    """
    refs, hyps, utterances, first_audio = [], [], [], []
    reference_refs: list[str] = []
    reference_hyps: list[str] = []
    for row, output in zip(rows, outputs, strict=True):
        if output is None:
            raise EvalError(f"{source}: no output for manifest row {_key(row)!r}")
        if "transcript" in output:
            transcript = _field(output, "transcript", str, source)
        elif transcribe is not None:
            samples, rate = _load_wav(resolve_path(output, _field(output, "wav", str, source)))
            transcript = transcribe(samples, rate)
        else:
            raise EvalError(f"{source}:{output['_line']}: output has no 'transcript' (and no "
                            "ASR model was given to transcribe its 'wav')")
        refs.append(row.text)
        hyps.append(transcript)
        utterance: dict[str, Any] = {"id": _key(row), "wer": M.word_errors(row.text, transcript).rate}
        if "first_audio_s" in output:
            utterance["first_audio_s"] = _field(output, "first_audio_s", float, source)
            first_audio.append(utterance["first_audio_s"])
        if "reference_transcript" in output:
            heard = _field(output, "reference_transcript", str, source)
            reference_refs.append(row.text)
            reference_hyps.append(heard)
            utterance["reference_audio_wer"] = M.word_errors(row.text, heard).rate
        utterances.append(utterance)
    summary = _text_summary(refs, hyps)
    ttfa = M.summarize(first_audio)
    summary.update({"utterances": len(rows), "first_audio_mean_s": ttfa["mean"],
                    "first_audio_p90_s": ttfa["p90"]})
    if reference_hyps:
        if len(reference_hyps) != len(rows):
            raise EvalError(f"{source}: {len(reference_hyps)} of {len(rows)} outputs give a "
                            "'reference_transcript': give it for all or none")
        summary["reference_audio_wer"] = M.corpus_wer(reference_refs, reference_hyps)
        summary["reference_audio_cer"] = M.corpus_cer(reference_refs, reference_hyps)
    return EvalResult("tts", summary, utterances)


EVALUATORS = {"asr": evaluate_asr, "tts": evaluate_tts, "codec": evaluate_codec,
              "translation": evaluate_translation}


# ------------------------------------------------------------------------------ output


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.4f}"
    return str(value)


def format_table(result: EvalResult, per_utterance: bool = False) -> str:
    """The summary as a two-column table; with `per_utterance`, one line per utterance."""
    width = max(len(name) for name in result.summary)
    lines = [f"dsm eval {result.kind}", f"{'metric'.ljust(width)}  value",
             f"{'-' * width}  {'-' * 10}"]
    lines += [f"{name.ljust(width)}  {_format_value(v)}" for name, v in result.summary.items()]
    if per_utterance and result.utterances:
        columns = list(dict.fromkeys(k for u in result.utterances for k in u))
        cells = [[_format_value(u.get(c, "")) for c in columns] for u in result.utterances]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines += ["", "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
        lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def load_references(kind: str, manifest: str) -> tuple[list[ManifestRow], str]:
    """Manifest rows (audio checked only where it is read) and a note on skipped rows."""
    try:
        rows, skipped = read_manifest(manifest, check_audio=kind == "codec")
    except ManifestError as error:
        if kind == "codec" or "duration" not in str(error):
            raise EvalError(str(error)) from None
        rows, skipped = read_manifest(manifest, check_audio=True)
    note = f"{len(skipped)} manifest rows skipped: {summarize_skipped(skipped)}" if skipped else ""
    if not rows:
        raise EvalError(f"{manifest}: no usable reference rows" + (f" ({note})" if note else ""))
    return rows, note


def run_eval(kind: str, manifest: str, hyp: str | None = None,
             outputs: list[Output] | None = None,
             vocabulary: set[str] | None = None) -> tuple[EvalResult, str]:
    """Score `hyp` (a file) or `outputs` (rows) against `manifest`. Returns result, note.
    `vocabulary` (ASR only): split the WER by in- and out-of-vocabulary words."""
    if vocabulary is not None and kind != "asr":
        raise EvalError(f"a vocabulary split applies to asr, not {kind}")
    rows, note = load_references(kind, manifest)
    if outputs is None:
        if hyp is None:
            raise EvalError("give --hyp FILE.jsonl (or a --model whose runner is wired)")
        outputs = read_outputs(hyp)
    source = hyp or "outputs"
    paired = pair_outputs(rows, outputs, source)
    if vocabulary is not None:
        return evaluate_asr(rows, paired, source, vocabulary), note
    return EVALUATORS[kind](rows, paired, source), note


def read_vocabulary(paths: Sequence[str]) -> set[str]:
    """The words of text files (one sentence per line, as `dsm data text` writes) and of
    manifests (.jsonl: their rows' text), e.g. a model's training text."""
    texts: list[str] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise EvalError(f"vocabulary file not found: {path}")
        if path.suffix == ".jsonl":
            try:
                rows, _ = read_manifest(path)
            except ManifestError as error:
                raise EvalError(f"vocabulary: {error}") from None
            texts.extend(row.text for row in rows)
        else:
            texts.extend(path.read_text(encoding="utf-8").splitlines())
    vocabulary = M.vocabulary_of(texts)
    if not vocabulary:
        raise EvalError(f"no words in the vocabulary files {', '.join(paths)}")
    return vocabulary


def model_outputs(kind: str, model: str, rows: list[ManifestRow], manifest: str, *,
                  asr_model: str | None = None, source_manifest: str | None = None,
                  device: str | None = None, seed: int = 0,
                  reference_audio: bool = False) -> list[Output]:
    """The outputs of `model` (a directory, a Hugging Face repo id, a codec spec) for `rows`,
    made as the streaming commands make them; an unusable model is an EvalError.
    `reference_audio` (tts): the recognizer also transcribes the rows' own audio."""
    try:
        if kind == "asr":
            from dsm.recipes.eval.asr import asr_outputs

            return asr_outputs(model, rows, device=device)
        if kind == "tts":
            from dsm.recipes.eval.tts import tts_outputs

            return tts_outputs(model, rows, asr_model=asr_model, seed=seed, device=device,
                               reference_audio=reference_audio)
        if kind == "translation":
            from dsm.recipes.eval.translation import translation_outputs

            return translation_outputs(model, rows, manifest, source_manifest, device=device)
        from dsm.recipes.eval.codec import codec_outputs

        return codec_outputs(model, rows)
    except EvalError:
        raise
    except (ValueError, OSError) as error:  # not a model of this kind, unreadable audio, ...
        raise EvalError(f"--model {model}: {error}") from None
