"""Synthesize a word-aligned speech corpus (no download: espeak-ng, flite, festival speak it).

Generated sentences (a dozen sentence shapes over a bilingual lexicon; numbers, times,
years and prices spelled as words; names and cities) are spoken by espeak-ng (many accents
and voice variants, English and French) and flite (English voices awb, slt, rms), and on
request Festival (English voices ked, slt_hts), with per-speaker and per-utterance
rate and pitch, resampled to --sample-rate with soxr. Word onsets come from the
synthesizers themselves (libespeak-ng word events, flite's and Festival's utterance
relations); word ends are the next onset minus the silence measured on the signal.

With --text-file (sentence files from `dsm data text`), a share of the train utterances
speaks real sentences instead (one each), and with --eval-text-file a share of the eval
utterances speaks sentences of documents never trained on; without them nothing changes.

Output folder:
  audio/NNN/*.wav                      mono 16-bit PCM
  train.jsonl, eval.jsonl              {audio, duration, text, lang, speaker,
                                        words: [{word, start, end}], id}
  (--parallel: train.en.jsonl, train.fr.jsonl, eval.en.jsonl, eval.fr.jsonl; row k of
   the .en and .fr files is the same sentence pair, same id)
  voices.json                          speakers of each split; eval voices are held out
  corpus.json                          how it was made

The eval split uses voices never heard in train (espeak variants m4, f3, klatt3 and the
flite voice rms; Festival's voices are all in train), so evaluation measures
generalisation to unseen speakers. The same --seed gives byte-identical audio and
manifests, whatever --workers.

Examples:
  dsm data synth --lang en --hours 2 --out data/en --seed 0 --workers 2
  dsm data synth --lang fr --hours 1 --out data/fr --seed 1
  dsm data synth --parallel --hours 1 --out data/en_fr --seed 2
  dsm data synth --hours 2 --engines flite,festival --out data/fest --seed 4
  dsm data synth --hours 5 --engines flite,festival --rate-range 0.7,1.3 \\
      --pitch-range 0.8,1.25 --out data/styles --seed 9   # many speaking styles per voice
  dsm data text --out data/text
  dsm data synth --lang en --hours 2 --out data/open_en --text-file data/text/train.en.txt \\
      --eval-text-file data/text/eval.en.txt   # real sentences besides generated ones
"""

from __future__ import annotations

import argparse
import sys
import time

from dsm.recipes.synth.corpus import (
    DEFAULT_ENGINES,
    ENGINES,
    PITCH_JITTER,
    RATE_JITTER,
    CorpusError,
    EngineUnavailable,
    SynthesisError,
    check_factor_range,
    speakers,
    synthesize_corpus,
)
from dsm.recipes.synth.text import LANGS


def _factor_range(text: str) -> tuple[float, float]:
    """argparse type for LOW,HIGH factor ranges."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:  # not two numbers
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    try:
        return check_factor_range("the range", (low, high))
    except CorpusError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", default="en",
                        help="language: en or fr (ignored with --parallel); default en")
    parser.add_argument("--hours", type=float,
                        help="(required) hours of audio to make, both splits together (with "
                             "--parallel: of the English side)")
    parser.add_argument("--out", help="(required) output folder (created; must not already "
                        "hold a corpus unless --overwrite)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--parallel", action="store_true",
                        help="English→French translation set: each sentence pair spoken "
                             "in both languages, paired by id")
    parser.add_argument("--sample-rate", type=int, default=24000,
                        help="output sample rate in Hz (default 24000, the codec's)")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help=f"comma-separated engines to use, of {','.join(ENGINES)} "
                             f"(default {','.join(DEFAULT_ENGINES)}: festival is opt-in, so "
                             "older seeds make the same corpora; French always uses espeak). "
                             "With espeak and others, 35%% of English utterances go to the "
                             "others' voices")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of utterances in the eval split, spoken by held-out voices "
                             "(default 0.1)")
    parser.add_argument("--voices", default="",
                        help="comma-separated speaker patterns to keep (fnmatch over ids such "
                             "as 'espeak:en-us+m3', 'flite:*', 'espeak:*+f*'), e.g. for a "
                             "single-voice TTS set; default all. See voices.json for ids")
    parser.add_argument("--rate-range", type=_factor_range, default=RATE_JITTER,
                        metavar="LOW,HIGH",
                        help="per-utterance speaking-rate factor, drawn uniformly and "
                             "multiplied with the speaker's base rate (default "
                             f"{RATE_JITTER[0]:g},{RATE_JITTER[1]:g}). Wider, e.g. 0.7,1.3, "
                             "gives each voice slow and fast speech rendered by the engine "
                             "itself (dsm data perturb --tempos instead stretches the recorded "
                             "signal)")
    parser.add_argument("--pitch-range", type=_factor_range, default=PITCH_JITTER,
                        metavar="LOW,HIGH",
                        help="per-utterance pitch factor, the same way (default "
                             f"{PITCH_JITTER[0]:g},{PITCH_JITTER[1]:g}); flite's rms and "
                             "Festival's slt_hts keep their own pitch")
    parser.add_argument("--rough-voices", action="store_true",
                        help="also train on the kal diphone voices (flite's kal16, and "
                             "Festival's kal with --engines ...,festival): one more American "
                             "male speaker, left out by default because its word starts can be "
                             "up to 130 ms off after a pause and its pauses hold breath noises. "
                             "Fine for ASR data (its text lags 0.5 s behind), not for TTS")
    parser.add_argument("--text-file", action="append", default=[], metavar="FILE",
                        help="sentence file, one a line in the corpus language (e.g. "
                             "train.en.txt from dsm data text), spoken by train utterances "
                             "besides the generated sentences (repeatable)")
    parser.add_argument("--eval-text-file", action="append", default=[], metavar="FILE",
                        help="the same for eval utterances (e.g. eval.en.txt); without it "
                             "eval speaks generated sentences only")
    parser.add_argument("--text-share", type=float, default=0.5,
                        help="share of a split's utterances that speak a sentence of its "
                             "files, the rest generated ones (default 0.5)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1); does not change the output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the manifests of a corpus already in --out (its audio "
                             "files are rewritten where names repeat)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--list-voices", action="store_true",
                        help="print every speaker id with its split and settings, and exit")


def main(args: argparse.Namespace) -> int:
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    if args.list_voices:
        for lang in LANGS:
            engines_of_lang = ENGINES if lang == "en" else ("espeak",)
            default = set(speakers(lang, engines_of_lang))
            for s in speakers(lang, engines_of_lang, rough_voices=True):
                note = "" if s in default else "  (--rough-voices)"
                print(f"{s.id:32s} {s.lang} {s.split:5s} rate {s.rate:.3f} pitch {s.pitch:.3f}"
                      f"{note}")
        return 0
    missing = [name for name, value in (("--hours", args.hours), ("--out", args.out))
               if value is None]
    if missing:
        print(f"dsm data synth: error: {' and '.join(missing)} required", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        summary = synthesize_corpus(
            args.out, lang=args.lang, hours=args.hours, seed=args.seed,
            sample_rate=args.sample_rate, parallel=args.parallel, engines=engines,
            eval_fraction=args.eval_fraction, workers=args.workers, overwrite=args.overwrite,
            progress=not args.quiet,
            voices=tuple(v.strip() for v in args.voices.split(",") if v.strip()),
            rate_range=args.rate_range, pitch_range=args.pitch_range,
            rough_voices=args.rough_voices, text_files=tuple(args.text_file),
            eval_text_files=tuple(args.eval_text_file), text_share=args.text_share)
    except (CorpusError, EngineUnavailable, SynthesisError) as error:
        print(f"dsm data synth: error: {error}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    seconds = sum(summary.seconds.values())
    print(f"wrote {summary.out}: train {summary.utterances['train']} utterances "
          f"({summary.seconds['train'] / 3600:.3f} h), eval {summary.utterances['eval']} "
          f"({summary.seconds['eval'] / 3600:.3f} h); manifests {', '.join(summary.manifests)}")
    print(f"{seconds:.1f} s of audio in {wall:.1f} s wall: {seconds / wall:.1f} s/s")
    return 0
