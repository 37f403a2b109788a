"""Evaluation metrics: WER/CER, word emission latency, SI-SNR, mel distance, STOI, BLEU.

Text metrics compare normalised text (lower case, punctuation removed, apostrophes inside
words kept) with jiwer; corpus figures pool the edit counts of all utterances (they are
not means of per-utterance rates). Audio metrics take mono float arrays at one sample rate
and compare their common length, since a codec may pad its output to whole frames.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
import torch

_PUNCTUATION = re.compile(r"[^\w\s']", flags=re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, stray apostrophes dropped, spaces collapsed."""
    text = _PUNCTUATION.sub(" ", text.lower().replace("\u2019", "'"))
    words = [word.strip("'") for word in text.split()]
    return " ".join(word for word in words if word)


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of hypothesis against reference (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors per reference unit; an empty reference scores 0 if nothing was inserted."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else math.inf
        return self.errors / self.reference_length


def _counts(reference: list[str], hypothesis: list[str]) -> ErrorCounts:
    """Levenshtein counts of two token lists (jiwer, which rejects an empty reference)."""
    if not reference:
        return ErrorCounts(0, 0, len(hypothesis), 0)
    if not hypothesis:
        return ErrorCounts(0, len(reference), 0, len(reference))
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, len(reference))


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word edit counts after `normalize_text`."""
    return _counts(normalize_text(reference).split(), normalize_text(hypothesis).split())


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character edit counts after `normalize_text`, spaces included as characters."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    # Spell characters as tokens; "_" stands for the space so jiwer keeps it.
    return _counts([c if c != " " else "_" for c in ref], [c if c != " " else "_" for c in hyp])


def vocabulary_of(texts: Iterable[str]) -> set[str]:
    """The words of `texts` after `normalize_text`: what a model was trained to say."""
    return {word for text in texts for word in normalize_text(text).split()}


@dataclass(frozen=True)
class VocabularyErrors:
    """Word errors split by whether the reference word is in a vocabulary (usually the
    training text's): a substituted or deleted reference word counts against its own
    class; inserted words belong to neither and are counted apart."""

    in_vocabulary_errors: int
    in_vocabulary_words: int
    oov_errors: int
    oov_words: int
    insertions: int


def errors_by_vocabulary(reference: str, hypothesis: str, vocabulary: Container[str]
                         ) -> VocabularyErrors:
    """`VocabularyErrors` of one utterance (words normalised by `normalize_text`)."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    known = [word in vocabulary for word in ref]
    wrong = [False] * len(ref)
    insertions = 0
    if ref and hyp:
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        for chunk in out.alignments[0]:
            if chunk.type in ("substitute", "delete"):
                for index in range(chunk.ref_start_idx, chunk.ref_end_idx):
                    wrong[index] = True
            elif chunk.type == "insert":
                insertions += chunk.hyp_end_idx - chunk.hyp_start_idx
    else:
        wrong = [True] * len(ref)
        insertions = len(hyp) if not ref else 0
    return VocabularyErrors(
        sum(w and k for w, k in zip(wrong, known)), sum(known),
        sum(w and not k for w, k in zip(wrong, known)), len(ref) - sum(known), insertions)


def _pool(counts: Sequence[ErrorCounts]) -> ErrorCounts:
    return ErrorCounts(
        sum(c.substitutions for c in counts), sum(c.deletions for c in counts),
        sum(c.insertions for c in counts), sum(c.reference_length for c in counts),
    )


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Total word errors over total reference words."""
    _check_same_count(references, hypotheses)
    return _pool([word_errors(r, h) for r, h in zip(references, hypotheses)]).rate


def corpus_cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Total character errors over total reference characters."""
    _check_same_count(references, hypotheses)
    return _pool([char_errors(r, h) for r, h in zip(references, hypotheses)]).rate


def _check_same_count(references: Sequence[object], hypotheses: Sequence[object]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses: they must pair up"
        )


# --- latency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedWord:
    """A reference word with its true span, or an emitted word (`end` = emission time)."""

    word: str
    start: float
    end: float


def word_emission_latencies(
    reference: Sequence[TimedWord], emitted: Sequence[tuple[str, float]]
) -> list[float]:
    """Per matched word: emission time minus the reference word's true end (seconds).

    Reference and emitted words are normalised and aligned by edit distance; a word
    counts when the alignment pairs it with one reference word (a hit or a substitution:
    either way it is the model's output for that word). Insertions and deletions have no
    latency. A word that normalises into several tokens gives each its times.
    """
    ref_tokens: list[float] = []  # true end per token
    ref_words: list[str] = []
    for word in reference:
        for token in normalize_text(word.word).split():
            ref_words.append(token)
            ref_tokens.append(word.end)
    hyp_times: list[float] = []
    hyp_words: list[str] = []
    for word, time in emitted:
        for token in normalize_text(word).split():
            hyp_words.append(token)
            hyp_times.append(time)
    if not ref_words or not hyp_words:
        return []
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    latencies = []
    for chunk in out.alignments[0]:
        if chunk.type not in ("equal", "substitute"):
            continue
        for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
            ref_index, hyp_index = chunk.ref_start_idx + offset, chunk.hyp_start_idx + offset
            latencies.append(hyp_times[hyp_index] - ref_tokens[ref_index])
    return latencies


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, 90th percentile and count of `values` (NaN figures when empty)."""
    if len(values) == 0:
        return {"mean": math.nan, "median": math.nan, "p90": math.nan, "count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()), "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)), "count": int(array.size),
    }


def time_to_first_audio(request_time: float, audio_times: Sequence[float]) -> float:
    """Seconds from the request to the first audio chunk (inf when no audio came)."""
    if len(audio_times) == 0:
        return math.inf
    return float(min(audio_times) - request_time)


# --- audio -----------------------------------------------------------------------------


def _mono_pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimate = np.asarray(estimate, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    length = min(estimate.size, reference.size)
    if length == 0:
        raise ValueError("cannot compare empty audio")
    return estimate[:length], reference[:length]


def si_snr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-noise ratio in dB (zero-mean signals, common length)."""
    estimate, reference = _mono_pair(estimate, reference)
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference + eps) * reference
    noise = estimate - target
    return float(10.0 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_distance(
    estimate: np.ndarray, reference: np.ndarray, sample_rate: int, n_mels: int = 80
) -> float:
    """Mean absolute difference of log10 mel spectrograms (n_fft 1024, hop 256)."""
    from dsm.modules.dsp import MelSpectrogram

    estimate, reference = _mono_pair(estimate, reference)
    mel = MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=n_mels, log=True)
    pair = torch.from_numpy(np.stack([estimate, reference])).to(torch.float32)[:, None]
    with torch.no_grad():
        logs = mel(pair)
    return float((logs[0] - logs[1]).abs().mean())


def stoi(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi), 0..1, reference = clean speech."""
    from pystoi import stoi as pystoi_stoi

    estimate, reference = _mono_pair(estimate, reference)
    return float(pystoi_stoi(reference, estimate, sample_rate, extended=False))


# --- translation -----------------------------------------------------------------------


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default 13a tokenisation), 0..100."""
    import sacrebleu

    _check_same_count(references, hypotheses)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def sentence_bleu(reference: str, hypothesis: str) -> float:
    """Smoothed sentence BLEU (sacrebleu), 0..100."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)
