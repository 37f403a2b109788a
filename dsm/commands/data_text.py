"""Sentences for open-vocabulary corpora from real English and French text (no download).

Reads human-written text installed from Debian packages, drops what is not prose
(attributions, headings, code, URLs, markup, the other language), splits it into
sentences, writes them the way a speaker says them (numbers, ordinals, years, dates,
times, currency, percentages, abbreviations and symbols as words, in the casing and
punctuation of `dsm data synth`'s sentences), keeps those within the word limits once,
and splits them into train and eval by source document with --seed: eval sentences
come from documents never used for training.

Sources (name: language, Debian packages; a document is):
  fortunes             en  fortunes            a fortune file (quotations, jokes, stories)
  kjv                  en  bible-kjv           a book of the King James Bible
  manpages-fr          fr  manpages-fr         a French manual page (body paragraphs)
  debian-reference-fr  fr  debian-reference-fr a chapter of the Debian Reference guide
  gimp-help-fr         fr  gimp-help-fr        a page of the GIMP user manual
and --text-dir LANG=FOLDER for your own plain-text files (a document per .txt file,
paragraphs separated by blank lines).

Output folder:
  train.en.txt, eval.en.txt, train.fr.txt, eval.fr.txt   one sentence a line
  summary.json   per source: documents, sentences kept, dropped by reason, eval
                 documents; per language: sentences, vocabulary, eval OOV rate vs train
The same installed files and --seed give byte-identical output.

Examples:
  dsm data text --out data/text
  dsm data text --out data/text_en --langs en --sources fortunes,kjv --eval-fraction 0.1 \\
      --seed 0 --min-words 3 --max-words 20
  dsm data text --out data/text --cap kjv=15000   # fortunes and the Bible nearer even
  dsm data text --out data/mine --langs fr --sources "" --text-dir fr=notes/ --seed 1
"""

from __future__ import annotations

import argparse
import sys

from dsm.recipes.text.corpus import (
    LANGS,
    TextCorpusError,
    directory_source,
    resolve_sources,
    write_text_corpus,
)
from dsm.recipes.text.sources import SOURCES, SourceUnavailable


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--langs", default=",".join(LANGS),
                        help="comma-separated languages to make, of en,fr (default en,fr)")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help="comma-separated built-in sources (default all; those not in "
                             "--langs are skipped): " + "; ".join(
                                 f"{s.name} ({s.lang}, apt {' '.join(s.packages)}): "
                                 f"{s.describe}" for s in SOURCES.values()))
    parser.add_argument("--text-dir", action="append", default=[], metavar="LANG=FOLDER",
                        help="also read every .txt file of FOLDER as a LANG document "
                             "(repeatable)")
    parser.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of each source's sentences in eval, by whole documents "
                             "(default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--min-words", type=int, default=3,
                        help="fewest words in a sentence (default 3)")
    parser.add_argument("--max-words", type=int, default=20,
                        help="most words in a sentence; longer ones are cut at ';' and ':' "
                             "where they can be (default 20)")
    parser.add_argument("--max-documents", type=int, default=None,
                        help="read only the first N documents of each source (quick runs)")
    parser.add_argument("--cap", action="append", default=[], metavar="SOURCE=N",
                        help="keep at most N train sentences of SOURCE, a seeded sample, so "
                             "that one large source does not dominate (repeatable; eval is "
                             "not capped), e.g. --cap kjv=15000")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a text corpus already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        langs = _names(args.langs)
        sources = resolve_sources(_names(args.sources), langs)
        for spec in args.text_dir:
            lang, sep, folder = spec.partition("=")
            if not sep or lang not in LANGS or not folder:
                raise TextCorpusError(f"--text-dir expects LANG=FOLDER with LANG in "
                                      f"{','.join(LANGS)}, got {spec!r}")
            if lang in langs:
                sources.append(directory_source(f"dir:{folder}", lang, folder))
        caps = {}
        for spec in args.cap:
            name, sep, count = spec.partition("=")
            if not sep or not name or not count.strip().isdigit():
                raise TextCorpusError(f"--cap expects SOURCE=N with N a whole number, got "
                                      f"{spec!r}")
            caps[name.strip()] = int(count)
        summary = write_text_corpus(
            args.out, sources, seed=args.seed, eval_fraction=args.eval_fraction,
            min_words=args.min_words, max_words=args.max_words,
            max_documents=args.max_documents, overwrite=args.overwrite,
            progress=not args.quiet, train_caps=caps)
    except (TextCorpusError, SourceUnavailable) as error:
        print(f"dsm data text: error: {error}", file=sys.stderr)
        return 2
    for name, source in summary["sources"].items():
        print(f"{name} ({source['lang']}): {source['documents']} documents, "
              f"{source['sentences']} sentences ({source['train_sentences']} train"
              + (f" of {source['train_sentences_before_cap']}, capped"
                 if source['train_sentences'] < source['train_sentences_before_cap'] else "")
              + ", "
              f"{source['eval_sentences']} eval), "
              f"{sum(source['dropped'].values())} dropped")
    for lang, figures in summary["langs"].items():
        oov = figures["eval_oov_rate"]
        print(f"{lang}: train {figures['train_sentences']} sentences, eval "
              f"{figures['eval_sentences']}; vocabulary {figures['vocabulary']} words; eval "
              f"OOV rate {'n/a' if oov is None else f'{100 * oov:.1f}%'}")
    print(f"wrote {args.out}: {', '.join(f'{s}.{lang}.txt' for lang in summary['langs'] for s in ('train', 'eval'))}, "
          "summary.json")
    return 0
