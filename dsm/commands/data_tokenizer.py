"""Train a sentencepiece text tokenizer for the DSM text stream.

Reads sentences from plain-text files (one per line) and/or JSONL manifests (the `text`
field of every row; rows without text are counted and skipped), trains a sentencepiece
model and writes OUT.model and OUT.vocab. The model reserves ids 0..3 (unk, bos, eos,
pad) so the text stream's word-start id (0) and pad id (3) never collide with a piece,
and uses byte fallback so every character stays encodable. Kyutai's published tokenizers
are sentencepiece models too: pass them to other commands directly, no conversion.

Examples:
  dsm data tokenizer --manifest data/en/train.jsonl --out data/tok_en --vocab-size 4000
  dsm data tokenizer --text corpus.txt --text more.txt --out tok --model-type bpe

The vocabulary size is an upper bound: on a small corpus sentencepiece may stop earlier
(the printed size is the real one). The chosen size must hold 4 reserved ids, 256 byte
pieces and at least one text piece.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from dsm.streams.tokenizer import TokenizerError, train_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", action="append", default=[], metavar="FILE",
                        help="plain-text file, one sentence per line (repeatable)")
    parser.add_argument("--manifest", action="append", default=[], metavar="JSONL",
                        help="JSONL manifest whose rows' `text` fields are used (repeatable)")
    parser.add_argument("--out", required=True, metavar="PREFIX",
                        help="output prefix: writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab-size", type=int, default=4000,
                        help="maximum vocabulary size, reserved and byte pieces included "
                        "(default 4000)")
    parser.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram",
                        help="sentencepiece algorithm (default unigram)")
    parser.add_argument("--character-coverage", type=float, default=1.0,
                        help="share of characters covered by pieces; the rest fall back "
                        "to bytes (default 1.0)")


def read_texts(text_files: list[str], manifests: list[str]) -> tuple[list[str], int]:
    """All sentences, and how many manifest rows had no usable text."""
    lines: list[str] = []
    skipped = 0
    for name in text_files:
        path = Path(name)
        if not path.is_file():
            raise TokenizerError(f"text file not found: {path}")
        lines.extend(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    for name in manifests:
        for text in _manifest_texts(Path(name)):
            if text is None:
                skipped += 1
            else:
                lines.append(text)
    return lines, skipped


def _manifest_texts(path: Path) -> Iterator[str | None]:
    """Each manifest row's text, None for a row without one."""
    from dsm.recipes.data.manifest import jsonl_objects

    if not path.is_file():
        raise TokenizerError(f"manifest not found: {path}")
    for _, row in jsonl_objects(path, TokenizerError):
        text = row.get("text")
        yield text.strip() if isinstance(text, str) and text.strip() else None


def main(args: argparse.Namespace) -> int:
    if not args.text and not args.manifest:
        print("error: give at least one --text FILE or --manifest JSONL")
        return 2
    try:
        lines, skipped = read_texts(args.text, args.manifest)
        if skipped:
            print(f"skipped {skipped} manifest row(s) without text")
        tokenizer = train_tokenizer(
            lines,
            args.out,
            vocab_size=args.vocab_size,
            model_type=args.model_type,
            character_coverage=args.character_coverage,
        )
    except TokenizerError as error:
        print(f"error: {error}")
        return 1
    sample = lines[0]
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode(sample)]
    print(f"trained on {len(lines)} sentences: {tokenizer.path} "
          f"(vocabulary {tokenizer.vocab_size}, pad {tokenizer.pad_id}, "
          f"word start {tokenizer.word_start_id})")
    print(f"example: {sample!r} -> {pieces}")
    return 0
