"""Sentence files from text sources, split into train and eval by source document.

Each source's documents are read in id order and cleaned (`sentences.py`); a sentence
already kept earlier (same words once lowercased and stripped of punctuation, any source
of the language) is dropped as a duplicate. Then each source's documents are shuffled
with a generator seeded by (seed, source name), and in that order each whole document
that brings eval nearer the requested share of that source's sentences goes to eval
(at least one document each side when the source has two), so every eval sentence comes from a document never
trained on and every source appears in both splits. Same files and seed: byte-identical
output.

Output folder:
  train.LANG.txt, eval.LANG.txt   one sentence a line, in source then document order
  summary.json                    per source: documents, sentences kept, dropped by
                                  reason, the eval documents; per language: sentences,
                                  vocabulary sizes, eval OOV rate against train
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dsm.recipes.text.sentences import clean_paragraphs
from dsm.recipes.text.sources import SOURCES, Document, Source, SourceUnavailable, documents

LANGS = ("en", "fr")


class TextCorpusError(ValueError):
    """Bad options, or options that leave nothing to write."""


@dataclass
class SourceText:
    """A source's kept sentences, document by document, and its drop counts."""

    source: Source
    documents: list[tuple[str, list[str]]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


def sentence_key(sentence: str) -> str:
    """What two sentences share when they are the same words: lowercase, no punctuation."""
    return " ".join(re.findall(r"[^\W_]+(?:['-][^\W_]+)*", sentence.lower()))


def words_of(sentence: str) -> list[str]:
    return sentence_key(sentence).split()


def directory_source(name: str, lang: str, folder: str | os.PathLike) -> Source:
    """A source of plain-text files: each *.txt file of `folder` is a document whose
    paragraphs are separated by blank lines."""
    root = Path(folder)

    def list_documents() -> list[str]:
        if not root.is_dir():
            raise SourceUnavailable(f"source {name}: folder {root} not found")
        names = sorted(p.name for p in root.glob("*.txt"))
        if not names:
            raise SourceUnavailable(f"source {name}: no .txt files in {root}")
        return names

    def read_document(doc_id: str) -> Document:
        text = (root / doc_id).read_text(encoding="utf-8", errors="replace")
        return Document(doc_id, [p for p in re.split(r"\n\s*\n", text) if p.strip()])

    return Source(name, lang, (), f"text files in {root}", list_documents, read_document)


def resolve_sources(names: Iterable[str], langs: Iterable[str]) -> list[Source]:
    """The named built-in sources of the given languages, in the order given."""
    langs = tuple(langs)
    for lang in langs:
        if lang not in LANGS:
            raise TextCorpusError(f"unknown language {lang!r}: expected {', '.join(LANGS)}")
    chosen = []
    for name in names:
        if name not in SOURCES:
            raise TextCorpusError(f"unknown source {name!r}; known sources: "
                                  f"{', '.join(SOURCES)}")
        if SOURCES[name].lang in langs:
            chosen.append(SOURCES[name])
    return chosen


def read_sources(sources: list[Source], min_words: int, max_words: int,
                 max_documents: int | None = None, progress: bool = True) -> list[SourceText]:
    """Every source cleaned and deduplicated per language (see the module docstring)."""
    seen: dict[str, set[str]] = {lang: set() for lang in LANGS}
    results = []
    for source in sources:
        ids = source.list_documents()  # raises SourceUnavailable before any work
        ids = ids[:max_documents] if max_documents is not None else ids
        result = SourceText(source)
        for document in tqdm(documents(source, len(ids)), total=len(ids), unit="doc",
                             desc=f"text {source.name}", disable=not progress,
                             dynamic_ncols=True):
            cleaned = clean_paragraphs(document.paragraphs, source.lang, min_words, max_words)
            for reason, count in cleaned.dropped.items():
                result.dropped[reason] = result.dropped.get(reason, 0) + count
            kept = []
            for sentence in cleaned.sentences:
                key = sentence_key(sentence)
                if key in seen[source.lang]:
                    result.dropped["duplicate"] = result.dropped.get("duplicate", 0) + 1
                else:
                    seen[source.lang].add(key)
                    kept.append(sentence)
            result.documents.append((document.id, kept))
        results.append(result)
    return results


def eval_documents(name: str, sizes: dict[str, int], fraction: float, seed: int) -> set[str]:
    """The ids of the documents of source `name` that go to eval: in a seeded shuffle,
    each whole document that brings eval nearer `fraction` of the sentences."""
    ids = [doc_id for doc_id in sorted(sizes) if sizes[doc_id] > 0]
    if fraction <= 0 or len(ids) < 2:
        return set()
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    order = [ids[int(i)] for i in rng.permutation(len(ids))]
    target = fraction * sum(sizes[i] for i in ids)
    chosen: set[str] = set()
    total = 0
    for doc_id in order:
        if len(chosen) == len(ids) - 1 or total >= target:
            break  # one document at least always trains
        if total + sizes[doc_id] - target < target - total:  # nearer the target
            chosen.add(doc_id)
            total += sizes[doc_id]
    return chosen or {order[0]}


def _vocabulary(sentences: list[str]) -> set[str]:
    return {w for s in sentences for w in words_of(s)}


def write_text_corpus(out: str | os.PathLike, sources: list[Source], seed: int = 0,
                      eval_fraction: float = 0.1, min_words: int = 3, max_words: int = 20,
                      max_documents: int | None = None, overwrite: bool = False,
                      progress: bool = True, train_caps: dict[str, int] | None = None) -> dict:
    """Write the sentence files and summary.json into `out` and return the summary.

    `train_caps` limits a source's train sentences (a seeded sample, in their order), so
    that one large source does not make most of a language's text; eval is not capped."""
    train_caps = dict(train_caps or {})
    unknown = sorted(set(train_caps) - {source.name for source in sources})
    if unknown:
        raise TextCorpusError(f"a train cap names {', '.join(unknown)}, not among the chosen "
                              f"sources ({', '.join(s.name for s in sources) or 'none'})")
    if any(cap < 1 for cap in train_caps.values()):
        raise TextCorpusError(f"train caps must be at least 1 sentence, got {train_caps}")
    if not sources:
        raise TextCorpusError("no sources chosen (check --sources against --langs)")
    if not 0.0 <= eval_fraction < 1.0:
        raise TextCorpusError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    if not 1 <= min_words <= max_words:
        raise TextCorpusError(f"need 1 <= min words <= max words, got {min_words}, {max_words}")
    if max_documents is not None and max_documents < 1:
        raise TextCorpusError(f"max documents must be at least 1, got {max_documents}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TextCorpusError(f"output {out} exists and is not a folder")
    if (out / "summary.json").exists() and not overwrite:
        raise TextCorpusError(f"{out} already holds a text corpus; choose another folder or "
                              "pass --overwrite")
    texts = read_sources(sources, min_words, max_words, max_documents, progress)
    lines: dict[tuple[str, str], list[str]] = {}
    summary: dict = {"seed": seed, "eval_fraction": eval_fraction, "min_words": min_words,
                     "max_words": max_words, "max_documents": max_documents,
                     "train_caps": dict(sorted(train_caps.items())),
                     "sources": {}, "langs": {}}
    for text in texts:
        sizes = {doc_id: len(kept) for doc_id, kept in text.documents}
        held = eval_documents(text.source.name, sizes, eval_fraction, seed)
        by_split: dict[str, list[str]] = {"train": [], "eval": []}
        for doc_id, kept in text.documents:
            by_split["eval" if doc_id in held else "train"].extend(kept)
        uncapped = len(by_split["train"])
        cap = train_caps.get(text.source.name)
        if cap is not None and cap < uncapped:
            rng = np.random.default_rng([seed, zlib.crc32(text.source.name.encode("utf-8")), 1])
            keep = np.sort(rng.choice(uncapped, size=cap, replace=False))
            by_split["train"] = [by_split["train"][int(i)] for i in keep]
        counts = {split: len(sentences) for split, sentences in by_split.items()}
        for split, sentences in by_split.items():
            lines.setdefault((split, text.source.lang), []).extend(sentences)
        summary["sources"][text.source.name] = {
            "lang": text.source.lang, "packages": list(text.source.packages),
            "documents": len(text.documents),
            "documents_with_sentences": sum(1 for n in sizes.values() if n),
            "sentences": counts["train"] + counts["eval"], "train_sentences": counts["train"],
            "train_sentences_before_cap": uncapped,
            "eval_sentences": counts["eval"], "dropped": dict(sorted(text.dropped.items())),
            "eval_documents": sorted(held)}
    langs = sorted({t.source.lang for t in texts}, key=LANGS.index)
    empty = [lang for lang in langs if not lines.get(("train", lang))]
    if empty:
        raise TextCorpusError(
            f"no {' or '.join(empty)} sentence survived cleaning (sources "
            f"{', '.join(t.source.name for t in texts)}; see the drop reasons with a wider "
            f"--min-words/--max-words or more documents): nothing written")
    out.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        train, evaluation = lines.get(("train", lang), []), lines.get(("eval", lang), [])
        for split, sentences in (("train", train), ("eval", evaluation)):
            (out / f"{split}.{lang}.txt").write_text("".join(s + "\n" for s in sentences),
                                                      encoding="utf-8")
        vocabulary = _vocabulary(train)
        eval_words = [w for s in evaluation for w in words_of(s)]
        oov = sum(w not in vocabulary for w in eval_words)
        summary["langs"][lang] = {
            "train_sentences": len(train), "eval_sentences": len(evaluation),
            "train_words": sum(len(words_of(s)) for s in train), "eval_words": len(eval_words),
            "train_vocabulary": len(vocabulary),
            "vocabulary": len(vocabulary | set(eval_words)),
            "eval_oov_rate": round(oov / len(eval_words), 4) if eval_words else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return summary
