"""Corpus synthesis: text generation, word times against the audio, determinism, held-out
voices, parallel pairs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsm.cli import main as dsm_main
from dsm.recipes.data.manifest import read_manifest
from dsm.recipes.synth import corpus as synth_corpus
from dsm.recipes.synth import espeak as synth_espeak
from dsm.recipes.synth import festival as synth_festival
from dsm.recipes.synth import flite as synth_flite
from dsm.recipes.synth.corpus import (
    CorpusError,
    EngineUnavailable,
    Job,
    SynthesisError,
    make_item,
    synthesize_corpus,
    word_times,
)
from dsm.recipes.synth.text import (
    NOUNS,
    english_number,
    english_ordinal,
    english_year,
    fr_de_definite,
    fr_definite,
    french_number,
    sentence_pair,
)

# ---------------------------------------------------------------- an independent audio check
# Written apart from synth_corpus's own timing code: power smoothed over 15 ms (not 10 ms
# RMS frames), a threshold that also respects the measured noise floor, and pauses found
# as runs of quiet samples.

PAUSE_S = 0.08        # quiet at least this long is a pause in the signal
ONSET_TOLERANCE_S = 0.06
END_TOLERANCE_S = 0.1  # word ends sit on slowly decaying tails: judged less tightly
GAP_S = 0.15          # a manifest gap this long must be a pause in the signal


def quiet_runs(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    n = int(0.015 * sample_rate)
    power = np.convolve(audio.astype(np.float64) ** 2, np.ones(n) / n, mode="same")
    level = 10 * np.log10(power + 1e-12)
    threshold = max(level.max() - 38.0, np.percentile(level, 1) + 10.0)
    quiet = level < threshold
    change = np.flatnonzero(np.diff(quiet.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [len(quiet)]])
    runs = [(a / sample_rate, b / sample_rate) for a, b in zip(bounds[:-1], bounds[1:])
            if quiet[a] and (b - a) / sample_rate >= PAUSE_S]
    return quiet, runs


def timing_problems(words: list[dict], audio: np.ndarray, sample_rate: int) -> tuple[list[str], int]:
    """Disagreements between word times and the audio, and how many words follow a pause."""
    quiet, runs = quiet_runs(audio, sample_rate)
    duration = len(audio) / sample_rate
    rises = [b for a, b in runs if b < duration]  # the signal rises from silence here
    falls = [a for a, b in runs if a > 0]          # ... and falls into silence here
    problems, after_pause = [], 0
    for i, w in enumerate(words):
        start, end = w["start"], w["end"]
        a, b = int(start * sample_rate), int((start + ONSET_TOLERANCE_S) * sample_rate)
        if quiet[a:b].all():
            problems.append(f"{w['word']!r} at {start}: silent for 60 ms after its onset")
        if i == 0 or start - words[i - 1]["end"] >= GAP_S:
            after_pause += 1
            gap = min((abs(r - start) for r in rises), default=np.inf)
            if gap > ONSET_TOLERANCE_S:
                problems.append(f"{w['word']!r} at {start}: nearest rise from silence {gap:.3f} s")
        if i == len(words) - 1 or words[i + 1]["start"] - end >= GAP_S:
            gap = min((abs(f - end) for f in falls), default=np.inf)
            if gap > END_TOLERANCE_S:
                problems.append(f"{w['word']!r} ends {end}: nearest fall into silence {gap:.3f} s")
    # every pause in the signal sits between words: a rise is a word onset (or inside a
    # word: a stop closure), a fall is a word end (or inside a word)
    for r in rises:
        if not any(w["start"] - ONSET_TOLERANCE_S <= r <= w["end"] for w in words):
            problems.append(f"rise from silence at {r:.3f} s is in no word")
    for f in falls:
        if not any(w["start"] <= f <= w["end"] + END_TOLERANCE_S for w in words):
            problems.append(f"fall into silence at {f:.3f} s is in no word")
    return problems, after_pause


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- corpora made once


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    synthesize_corpus(root / "en", "en", hours=30 / 3600, seed=0, progress=False)
    synthesize_corpus(root / "fr", "fr", hours=30 / 3600, seed=1, progress=False)
    synthesize_corpus(root / "enfr", parallel=True, hours=20 / 3600, seed=2, progress=False)
    synthesize_corpus(root / "fest", "en", hours=60 / 3600, seed=4, engines=("flite", "festival"),
                      progress=False)
    return {"en": root / "en", "fr": root / "fr", "enfr": root / "enfr", "fest": root / "fest"}


def all_rows(folder: Path) -> list[tuple[Path, dict]]:
    return [(manifest, row) for manifest in sorted(folder.glob("*.jsonl"))
            for row in read_rows(manifest)]


@pytest.mark.parametrize("name", ["en", "fr", "enfr", "fest"])
def test_word_times_agree_with_audio(corpora, name):
    """Must-show: each word onset falls where the signal rises from silence (60 ms)."""
    rows = all_rows(corpora[name])
    total_words = total_after_pause = 0
    problems = []
    for manifest, row in rows:
        audio, sample_rate = sf.read(manifest.parent / row["audio"], dtype="float32")
        found, after_pause = timing_problems(row["words"], audio, sample_rate)
        problems += [f"{row['audio']} ({row['speaker']}): {p}" for p in found]
        total_words += len(row["words"])
        total_after_pause += after_pause
    assert not problems, "\n".join(problems)
    # the check covered words after pauses, not only connected speech
    assert total_after_pause >= len(rows) + 2
    assert total_words > 40
    duration = sum(row["duration"] for _, row in rows if row["lang"] == "en" or name == "fr")
    assert duration >= 20.0


def test_corpus_uses_both_engines_and_many_voices(corpora):
    speakers = {row["speaker"] for _, row in all_rows(corpora["en"])}
    assert any(s.startswith("flite:") for s in speakers), speakers
    assert any(s.startswith("espeak:") for s in speakers), speakers
    assert not any(s.startswith("festival:") for s in speakers), "festival is opt-in"
    assert len(speakers) >= 4


def test_festival_voices_train_beside_flite(corpora):
    rows = {name: read_rows(corpora["fest"] / f"{name}.jsonl") for name in ("train", "eval")}
    train_speakers = {r["speaker"] for r in rows["train"]}
    assert {"festival:ked", "festival:slt_hts"} <= train_speakers, train_speakers
    assert train_speakers <= {"festival:ked", "festival:slt_hts", "flite:awb", "flite:slt"}
    assert {r["speaker"] for r in rows["eval"]} <= {"flite:rms"}
    voices = json.loads((corpora["fest"] / "voices.json").read_text())
    assert "festival:ked" in json.dumps(voices) and "espeak:" not in json.dumps(voices)


def f0_median(audio: np.ndarray, sample_rate: int) -> float:
    """Median pitch of loud 40 ms frames by autocorrelation (60-400 Hz)."""
    n, pitches = int(0.04 * sample_rate), []
    for start in range(0, len(audio) - n, n):
        frame = audio[start:start + n] - audio[start:start + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < 0.02:
            continue
        corr = np.correlate(frame, frame, "full")[n - 1:]
        low, high = sample_rate // 400, sample_rate // 60
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] > 0.3 * corr[0]:
            pitches.append(sample_rate / lag)
    return float(np.median(pitches))


def test_festival_engine_rate_pitch_and_fresh_state():
    festival = synth_festival.FestivalEngine()
    text = "My father does not like trains, but my mother likes them a lot."
    plain = festival.speak(text, "ked")
    assert plain.sample_rate == 16000 and len(plain.onsets) == len(text.split())
    assert all(a < b for a, b in zip(plain.onsets, plain.ends))
    assert all(b <= a + 1e-6 for b, a in zip(plain.ends, plain.onsets[1:]))
    slow = festival.speak(text, "ked", stretch=1.25)
    assert len(slow.audio) / len(plain.audio) == pytest.approx(1.25, rel=0.05)
    high = festival.speak(text, "ked", pitch=1.25)
    assert f0_median(high.audio, 16000) / f0_median(plain.audio, 16000) == \
        pytest.approx(1.25, rel=0.08)
    hts = festival.speak(text, "slt_hts")
    fast = festival.speak(text, "slt_hts", stretch=0.8)
    assert len(fast.audio) / len(hts.audio) == pytest.approx(0.8, rel=0.05)
    assert hts.sample_rate == 32000 and hts.ends[-1] <= len(hts.audio) / 32000 + 1e-6
    # a request does not depend on those before it (the voice is selected anew each time)
    again = festival.speak(text, "ked")
    assert np.array_equal(plain.audio, again.audio) and plain.onsets == again.onsets
    with pytest.raises(SynthesisError, match="word tokens"):
        festival.speak("eleven -- twelve", "ked")  # '--' is no word: times cannot cover it
    with pytest.raises(EngineUnavailable, match="unknown Festival voice"):
        festival.speak(text, "kal16")
    festival.close()


def test_manifest_rows_are_valid(corpora):
    for name, folder in corpora.items():
        meta = json.loads((folder / "corpus.json").read_text())
        for manifest in sorted(folder.glob("*.jsonl")):
            rows = read_rows(manifest)
            parsed, skipped = read_manifest(manifest, require_words=True)
            assert skipped == [] and len(parsed) == len(rows), (manifest, skipped)
            for row in rows:
                assert set(row) == {"audio", "duration", "text", "lang", "speaker", "words", "id"}
                info = sf.info(manifest.parent / row["audio"])
                assert info.samplerate == 24000 and info.channels == 1
                assert row["duration"] == pytest.approx(info.frames / 24000, abs=1e-3)
                assert " ".join(w["word"] for w in row["words"]) == row["text"]
                assert not any(ch.isdigit() for ch in row["text"])  # numbers as words
                times = [t for w in row["words"] for t in (w["start"], w["end"])]
                assert times == sorted(times) and 0 < times[0] and times[-1] < row["duration"]
                assert all(w["end"] > w["start"] for w in row["words"])
                assert row["lang"] == {"enfr": manifest.name.split(".")[1],
                                       "fest": "en"}.get(name, name)
        assert meta["sample_rate"] == 24000 and meta["seed"] in (0, 1, 2, 4)


def test_eval_voices_are_held_out(corpora):
    for folder in corpora.values():
        voices = json.loads((folder / "voices.json").read_text())
        train = {v["id"] for v in voices["train"]}
        held = {v["id"] for v in voices["eval"]}
        assert train and held and not train & held
        # held out as voices, not only as accent+variant combinations
        train_qualities = {i.split("+")[-1] for i in train}
        assert not {i.split("+")[-1] for i in held} & train_qualities
        for manifest in folder.glob("*.jsonl"):
            split = manifest.name.split(".")[0]
            for row in read_rows(manifest):
                assert row["speaker"] in (train if split == "train" else held), row["speaker"]


def test_parallel_pairs_share_ids_and_sentences(corpora):
    folder = corpora["enfr"]
    pairs = 0
    for split in ("train", "eval"):
        en, fr = read_rows(folder / f"{split}.en.jsonl"), read_rows(folder / f"{split}.fr.jsonl")
        assert [r["id"] for r in en] == [r["id"] for r in fr]
        for a, b in zip(en, fr):
            assert (a["lang"], b["lang"]) == ("en", "fr")
            assert a["speaker"] != b["speaker"] and b["speaker"].startswith("espeak:fr")
            ends = ".?!"
            assert sum(a["text"].count(c) for c in ends) == sum(b["text"].count(c) for c in ends)
            pairs += 1
    assert pairs >= 2


# ---------------------------------------------------------------- text


def test_numbers_in_words():
    assert english_number(0) == "zero"
    assert english_number(27) == "twenty seven"
    assert english_number(305) == "three hundred and five"
    assert english_number(21_040) == "twenty one thousand and forty"
    assert english_ordinal(23) == "twenty third" and english_ordinal(30) == "thirtieth"
    assert english_year(1984) == "nineteen eighty four"
    assert english_year(1905) == "nineteen oh five"
    assert french_number(21) == "vingt et un"
    assert french_number(21, feminine=True) == "vingt et une"
    assert french_number(71) == "soixante et onze"
    assert french_number(80) == "quatre-vingts" and french_number(85) == "quatre-vingt-cinq"
    assert french_number(97) == "quatre-vingt-dix-sept"
    assert french_number(200) == "deux cents" and french_number(203) == "deux cent trois"
    assert french_number(1984) == "mille neuf cent quatre-vingt-quatre"
    assert french_number(80_000) == "quatre-vingt mille"
    with pytest.raises(ValueError, match="out of range"):
        english_number(-1)


def test_french_articles_elide_and_contract():
    tree = next(n for n in NOUNS if n.en == "tree")
    book = next(n for n in NOUNS if n.en == "book")
    chair = next(n for n in NOUNS if n.en == "chair")
    assert fr_definite(tree) == "l'arbre" and fr_de_definite(tree) == "de l'arbre"
    assert fr_definite(book) == "le livre" and fr_de_definite(book) == "du livre"
    assert fr_definite(chair) == "la chaise" and fr_de_definite(chair) == "de la chaise"
    rng = np.random.default_rng(0)
    questions = [fr for _, fr in (sentence_pair(rng) for _ in range(3000))
                 if fr.startswith("Combien")]
    assert any(q.startswith("Combien d'") for q in questions)
    assert not any(q.split()[2][0] in "aeiouhéœî" for q in questions
                   if q.startswith("Combien de "))


def test_sentences_are_varied():
    rng = np.random.default_rng(0)
    pairs = [sentence_pair(rng) for _ in range(600)]
    english = [en for en, _ in pairs]
    assert len(set(english)) > 590
    openings = {" ".join(en.split()[:1]) for en in english}
    assert len(openings) > 40  # not one template: many ways to begin
    vocab = {w.strip(".,?!").lower() for en in english for w in en.split()}
    assert len(vocab) > 300
    assert any("?" in en for en in english) and any("," in en for en in english)
    assert all(en.isascii() for en in english)
    assert not any(ch.isdigit() for en, fr in pairs for ch in en + fr)
    assert any("é" in fr or "è" in fr or "à" in fr for _, fr in pairs)


# ---------------------------------------------------------------- timing rule


def test_word_times_move_onsets_out_of_silence_and_trim_ends():
    sample_rate = 24000
    t = np.arange(int(1.2 * sample_rate)) / sample_rate
    audio = np.zeros_like(t, dtype=np.float32)
    for a, b in ((0.10, 0.40), (0.60, 0.90), (0.90, 1.10)):
        mask = (t >= a) & (t < b)
        audio[mask] = 0.5 * np.sin(2 * np.pi * 200 * t[mask])
    # the engine says word 2 starts at 0.50 (a 100 ms closure before its sound at 0.60)
    times = word_times(audio, sample_rate, [0.10, 0.50, 0.90])
    (s0, e0), (s1, e1), (s2, e2) = times
    assert s0 == pytest.approx(0.10, abs=0.01) and e0 == pytest.approx(0.40, abs=0.01)
    assert s1 == pytest.approx(0.60, abs=0.01) and e1 == pytest.approx(0.90, abs=0.01)
    assert s2 == pytest.approx(0.90, abs=0.01) and e2 == pytest.approx(1.10, abs=0.01)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_corpus_whatever_the_workers(tmp_path, corpora):
    synthesize_corpus(tmp_path / "again", "en", hours=30 / 3600, seed=0, progress=False, workers=2)
    first, second = corpora["en"], tmp_path / "again"
    for name in ("train.jsonl", "eval.jsonl", "voices.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    wavs = sorted(p.relative_to(first) for p in first.rglob("*.wav"))
    assert wavs == sorted(p.relative_to(second) for p in second.rglob("*.wav"))
    for wav in wavs:
        assert (first / wav).read_bytes() == (second / wav).read_bytes(), wav
    synthesize_corpus(tmp_path / "other", "en", hours=10 / 3600, seed=5, progress=False)
    assert read_rows(tmp_path / "other" / "train.jsonl")[0]["text"] != \
        read_rows(first / "train.jsonl")[0]["text"]


def test_an_utterance_does_not_depend_on_what_was_spoken_before():
    job = Job(3, 4, "en", False, ("espeak", "flite"), 0.1, 24000)
    before = make_item(job)[0]
    for index in range(4):
        make_item(Job(3, index, "en", False, ("espeak", "flite"), 0.1, 24000))
    after = make_item(job)[0]
    assert np.array_equal(before.audio, after.audio) and before.words == after.words


# ---------------------------------------------------------------- bad input


def test_bad_requests_are_named(tmp_path):
    with pytest.raises(CorpusError, match="unknown language 'de'"):
        synthesize_corpus(tmp_path / "a", "de", hours=0.01, progress=False)
    for hours in (0, -1.0, float("nan")):
        with pytest.raises(CorpusError, match="hours must be positive"):
            synthesize_corpus(tmp_path / "a", "en", hours=hours, progress=False)
    with pytest.raises(CorpusError, match="flite and festival have no French voices"):
        synthesize_corpus(tmp_path / "a", "fr", hours=0.01, engines=("flite",), progress=False)
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    with pytest.raises(CorpusError, match="not a folder"):
        synthesize_corpus(a_file, "en", hours=0.01, progress=False)
    with pytest.raises(CorpusError, match="not writable"):
        synthesize_corpus(a_file / "below", "en", hours=0.01, progress=False)
    assert not (tmp_path / "a").exists()


def test_existing_corpus_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "c"
    synthesize_corpus(out, "en", hours=3 / 3600, seed=0, engines=("espeak",), progress=False)
    before = (out / "train.jsonl").read_bytes()
    with pytest.raises(CorpusError, match="already holds a corpus"):
        synthesize_corpus(out, "en", hours=3 / 3600, seed=9, progress=False)
    assert (out / "train.jsonl").read_bytes() == before
    synthesize_corpus(out, "en", hours=3 / 3600, seed=9, engines=("espeak",), overwrite=True,
                      progress=False)
    assert (out / "train.jsonl").read_bytes() != before


@pytest.mark.parametrize("module, engine_name, hint", [
    (synth_espeak, "espeak", "apt-get install espeak-ng"),
    (synth_flite, "flite", "apt-get install flite"),
    (synth_festival, "festival", "apt-get install festival"),
])
def test_missing_engine_is_a_clear_error(tmp_path, monkeypatch, module, engine_name, hint):
    attribute = "PROGRAM" if engine_name == "festival" else "LIBRARY"
    monkeypatch.setattr(module, attribute, f"lib{engine_name}-not-installed.so.1")
    monkeypatch.setattr(synth_corpus, "_ENGINE_CACHE", {})
    with pytest.raises(EngineUnavailable, match=hint):
        synthesize_corpus(tmp_path / "x", "en", hours=0.01, engines=(engine_name,),
                          eval_fraction=0.0, progress=False)
    assert not (tmp_path / "x").exists()  # nothing was started


def test_missing_festival_voice_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setitem(synth_festival.VOICES, "ked",
                        ("voice_not_installed_diphone", "festvox-kdlpc16k", "diphone"))
    monkeypatch.setattr(synth_corpus, "_ENGINE_CACHE", {})
    with pytest.raises(EngineUnavailable, match="apt-get install festvox-kdlpc16k"):
        synthesize_corpus(tmp_path / "x", "en", hours=0.01, engines=("festival",),
                          eval_fraction=0.0, progress=False)
    assert not (tmp_path / "x").exists()
    # festival alone has no held-out voice: an eval split needs another engine
    with pytest.raises(CorpusError, match="no en eval speaker among engines festival"):
        synthesize_corpus(tmp_path / "x", "en", hours=0.01, engines=("festival",), progress=False)


def test_cli_reports_errors_and_writes_a_corpus(tmp_path, capsys):
    assert dsm_main(["data", "synth", "--lang", "xx", "--hours", "1", "--out",
                     str(tmp_path / "a")]) == 2
    assert "unknown language 'xx'" in capsys.readouterr().err
    assert dsm_main(["data", "synth", "--hours", "-2", "--out", str(tmp_path / "a")]) == 2
    assert "hours must be positive" in capsys.readouterr().err
    assert dsm_main(["data", "synth", "--lang", "fr", "--hours", str(4 / 3600), "--out",
                     str(tmp_path / "b"), "--seed", "3", "--quiet"]) == 0
    assert "s/s" in capsys.readouterr().out
    rows = read_rows(tmp_path / "b" / "train.jsonl") + read_rows(tmp_path / "b" / "eval.jsonl")
    assert rows and all(r["lang"] == "fr" for r in rows)


def test_voice_filter_keeps_only_matching_speakers(tmp_path, capsys):
    out = tmp_path / "slt"
    synthesize_corpus(out, "en", hours=4 / 3600, seed=0, voices=("flite:slt", "espeak:*+f3"),
                      progress=False)
    rows = read_rows(out / "train.jsonl") + read_rows(out / "eval.jsonl")
    assert rows and {r["speaker"] for r in read_rows(out / "train.jsonl")} == {"flite:slt"}
    assert all(r["speaker"].endswith("+f3") for r in read_rows(out / "eval.jsonl"))
    with pytest.raises(CorpusError, match="no en eval speaker matches"):
        synthesize_corpus(tmp_path / "none", "en", hours=0.01, voices=("flite:slt",),
                          progress=False)
    assert dsm_main(["data", "synth", "--list-voices"]) == 0
    listing = capsys.readouterr().out
    assert "flite:rms" in listing and "espeak:fr-be+m4" in listing and " eval " in listing


def test_rate_and_pitch_ranges_are_rendered_by_the_engine(tmp_path, capsys):
    """--rate-range / --pitch-range widen the per-utterance factors; the engine itself
    speaks slower, faster, higher or lower, and the word times follow."""
    speaker = synth_corpus.Speaker("flite", "awb", "en", "train", 1.0, 1.0, 50)
    text = "On Sunday, Laura and Vincent are going to paint sixty tomatoes."

    def render(rate: float, pitch: float) -> synth_corpus.Utterance:
        return synth_corpus._render(speaker, text, np.random.default_rng(5), 24000,
                                    (rate, rate), (pitch, pitch))

    def speech_s(utt: synth_corpus.Utterance) -> float:
        return utt.words[-1]["end"] - utt.words[0]["start"]

    slow, fast = render(0.7, 1.0), render(1.3, 1.0)
    assert speech_s(slow) / speech_s(fast) == pytest.approx(1.3 / 0.7, rel=0.12)
    for utt in (slow, fast):
        found, _ = timing_problems(utt.words, utt.audio.astype(np.float32) / 32768, 24000)
        assert not found, found
    low, high = render(1.0, 0.8), render(1.0, 1.25)
    ratio = f0_median(high.audio / 32768, 24000) / f0_median(low.audio / 32768, 24000)
    assert ratio == pytest.approx(1.25 / 0.8, rel=0.1)
    # the CLI: the ranges reach the corpus and are recorded; bad ranges are named
    out = tmp_path / "styles"
    assert dsm_main(["data", "synth", "--hours", str(4 / 3600), "--engines", "flite",
                     "--eval-fraction", "0", "--rate-range", "0.7,0.7", "--pitch-range",
                     "1.2,1.2", "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["rate_range"] == [0.7, 0.7] and meta["pitch_range"] == [1.2, 1.2]
    for bad, message in (("0.9", "expected LOW,HIGH"), ("1.2,0.8", "LOW <= HIGH"),
                         ("0.2,1", "0.5 <= LOW"), ("a,b", "expected LOW,HIGH")):
        with pytest.raises(SystemExit):
            dsm_main(["data", "synth", "--hours", "1", "--out", str(tmp_path / "x"),
                      "--rate-range", bad])
        assert message in capsys.readouterr().err
    with pytest.raises(CorpusError, match="pitch range must be LOW,HIGH"):
        synthesize_corpus(tmp_path / "x", hours=0.01, pitch_range=(1.0, 3.0), progress=False)
    assert not (tmp_path / "x").exists()


def test_rough_voices_train_only_on_request(tmp_path, capsys):
    """The kal voices are left out unless asked for; asked for, they speak train rows whose
    word starts stay within the stated 130 ms of the signal's rise after a pause."""
    kal = ("flite:kal16", "festival:kal")
    with pytest.raises(CorpusError, match="no en train speaker .* only with --rough-voices"):
        synthesize_corpus(tmp_path / "a", "en", hours=4 / 3600, engines=("flite", "festival"),
                          voices=kal, eval_fraction=0.0, progress=False)
    assert not (tmp_path / "a").exists()
    out = tmp_path / "kal"
    assert dsm_main(["data", "synth", "--hours", str(20 / 3600), "--engines", "flite,festival",
                     "--rough-voices", "--voices", ",".join(kal), "--eval-fraction", "0",
                     "--out", str(out), "--seed", "3", "--quiet"]) == 0
    rows = read_rows(out / "train.jsonl")
    assert set(kal) == {r["speaker"] for r in rows}, {r["speaker"] for r in rows}
    parsed, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert skipped == [] and len(parsed) == len(rows)
    assert json.loads((out / "corpus.json").read_text())["rough_voices"] is True
    voices = json.loads((out / "voices.json").read_text())
    assert {v["id"] for v in voices["train"]} == set(kal) and voices["eval"] == []
    for row in rows:
        audio, sample_rate = sf.read(out / row["audio"])
        _, runs = quiet_runs(audio, sample_rate)
        rises = [b for _, b in runs if b < len(audio) / sample_rate]
        first = row["words"][0]["start"]
        assert min(abs(r - first) for r in rises) <= 0.15, (row["id"], first, rises)
    # a default corpus with both engines still never uses them (held-out rms stays eval)
    default_ids = [s.id for s in synth_corpus.speakers("en", ("flite", "festival"))]
    assert "flite:rms" in default_ids and not set(kal) & set(default_ids)
    assert dsm_main(["data", "synth", "--list-voices"]) == 0
    listing = capsys.readouterr().out
    assert "festival:kal " in listing and "(--rough-voices)" in listing


def test_espeak_words_spoken_as_one_unit_share_its_sound():
    # espeak gives "of the" one word event (at "of"); "the" starts within that unit's sound,
    # after the letters of "of", and before the pause that follows the unit
    sample_rate = 1000
    audio = np.zeros(1000, np.float32)
    audio[100:400] = 0.5   # "go" 0.1-0.2, "of the" 0.2-0.4, then a pause
    audio[600:900] = 0.5   # "road"
    text = "go of the road"
    events = [(1, 100), (4, 200), (11, 600)]  # (1-based character position, ms)
    onsets = synth_espeak._onsets_for_tokens(text, events, audio, sample_rate)
    assert onsets[:2] == [0.1, 0.2] and onsets[3] == 0.6
    assert onsets[2] == pytest.approx(0.2 + 0.2 * 2 / 5)  # the unit's sound ends at 0.4 s
    with pytest.raises(SynthesisError, match="no word event for 'go'"):
        synth_espeak._onsets_for_tokens(text, events[1:], audio, sample_rate)
    with pytest.raises(SynthesisError, match="out of order"):
        synth_espeak._onsets_for_tokens(text, [(1, 100), (4, 700), (11, 600)], audio,
                                        sample_rate)


def test_espeak_times_every_word_of_real_sentences():
    # real English that espeak speaks with merged units ("in the", "of the", "to be"):
    # each word gets an onset, in order, and the corpus's word times stay inside the audio
    speaker = synth_corpus.Speaker("espeak", "en-us", "en", "train", 1.0, 1.0, 50)
    for text in ("He went to the park and sat in the sun.",
                 "It is one of the best things in the world, to be sure."):
        spoken = synth_corpus.speak(speaker, text)
        assert len(spoken.onsets) == len(text.split())
        assert all(a < b for a, b in zip(spoken.onsets, spoken.onsets[1:])), spoken.onsets
        times = word_times(spoken.audio, spoken.sample_rate, spoken.onsets)
        assert all(0 <= start < end <= len(spoken.audio) / spoken.sample_rate
                   for start, end in times)


def test_words_timed_out_of_order_are_refused_not_written(monkeypatch):
    # flite reads "I AM" as letters and maps "AM" back to the utterance start: such a draw
    # is refused (make_item then draws another text), never written with negative words
    def spoken_backwards(speaker, text, *args):
        audio = np.full(16000, 0.1, np.float32)
        return synth_espeak.Spoken(audio, 16000, [0.0, 0.5, 0.2], None)

    monkeypatch.setattr(synth_corpus, "speak", spoken_backwards)
    speaker = synth_corpus.Speaker("flite", "slt", "en", "train", 1.0, 1.0, 50)
    with pytest.raises(SynthesisError, match="out of order"):
        synth_corpus._render(speaker, "I AM here", np.random.default_rng(0), 16000)
