"""Text tokenizer for the DSM text stream: a thin, checked wrapper over sentencepiece.

The text stream reserves two ids (Kyutai's convention, see `dsm.streams.text_stream`):
`pad_id` = 3 fills frames between words and `word_start_id` = 0 marks a word boundary.
A tokenizer used for the text stream must therefore never *produce* those ids when it
encodes text. Models trained by `train_tokenizer` guarantee it: ids 0..3 are sentencepiece's
unk / bos / eos / pad pieces and byte fallback means no character is ever unknown. For a
loaded model (Kyutai's `.model` files are sentencepiece too) `encode` raises a clear error
if a character maps to a reserved id instead of silently writing a fake word boundary.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

PAD_ID = 3  # Kyutai `existing_text_padding_id`: nothing is said at this frame
WORD_START_ID = 0  # Kyutai "end of padding": a word boundary at the end of this frame


class TokenizerError(ValueError):
    """A tokenizer file is missing or unreadable, or text cannot be encoded safely."""


class TextTokenizer:
    """Sentencepiece model with the DSM special ids exposed.

    `encode(text)` returns the token ids of `text` (never a reserved id); `decode(ids)`
    turns ids back into text, ignoring the reserved ids so a raw text-stream slice decodes.
    """

    def __init__(
        self,
        processor: spm.SentencePieceProcessor,
        pad_id: int = PAD_ID,
        word_start_id: int = WORD_START_ID,
        path: str | None = None,
    ) -> None:
        self.processor = processor
        self.pad_id = pad_id
        self.word_start_id = word_start_id
        self.path = path
        size = processor.get_piece_size()
        for name, value in (("pad_id", pad_id), ("word_start_id", word_start_id)):
            if not 0 <= value < size:
                raise TokenizerError(f"{name}={value} is outside the vocabulary of size {size}")
        if pad_id == word_start_id:
            raise TokenizerError("pad_id and word_start_id must differ")
        self.reserved_ids: frozenset[int] = frozenset({pad_id, word_start_id})

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: int) -> TextTokenizer:
        """Load a sentencepiece `.model` file (ours or Kyutai's)."""
        file = Path(path)
        if not file.exists():
            raise TokenizerError(f"tokenizer file not found: {file}")
        if not file.is_file():
            raise TokenizerError(f"tokenizer path is not a file: {file}")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(file.read_bytes())
        except Exception as error:  # sentencepiece raises bare RuntimeError/OSError
            raise TokenizerError(
                f"{file} is not a sentencepiece model (.model protobuf): {error}"
            ) from error
        return cls(processor, path=str(file), **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`. Raises `TokenizerError` if a piece maps to a reserved id."""
        ids: list[int] = self.processor.encode(text, out_type=int)
        bad = [i for i, token in enumerate(ids) if token in self.reserved_ids]
        if bad:
            pieces = self.processor.encode(text, out_type=str)
            shown = ", ".join(repr(pieces[i]) for i in bad[:5])
            raise TokenizerError(
                f"text {text!r} encodes to reserved id(s) {sorted({ids[i] for i in bad})} "
                f"(pad={self.pad_id}, word start={self.word_start_id}) at piece(s) {shown}; "
                "the tokenizer has no piece for these characters (train one with byte "
                "fallback, or clean the text)"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; reserved ids (pad, word start) and negative ids are skipped."""
        kept = [int(i) for i in ids if int(i) >= 0 and int(i) not in self.reserved_ids]
        size = self.vocab_size
        for token in kept:
            if token >= size:
                raise TokenizerError(f"token id {token} is outside the vocabulary ({size})")
        return self.processor.decode(kept)

    def id_to_piece(self, token: int) -> str:
        return self.processor.id_to_piece(int(token))


def train_tokenizer(
    lines: Iterable[str],
    out_prefix: str | os.PathLike[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    byte_fallback: bool = True,
    seed_sentencepiece_size: int = 100_000,
    num_threads: int = 1,
) -> TextTokenizer:
    """Train a sentencepiece model on `lines`; writes `<out_prefix>.model` and `.vocab`.

    Ids 0..3 are reserved (unk, bos, eos, pad) so that the stream's word-start (0) and pad
    (3) ids never collide with a text piece; byte fallback keeps every character encodable.
    """
    texts: Sequence[str] = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise TokenizerError("no text to train the tokenizer on (all lines empty)")
    if vocab_size < 4 + (256 if byte_fallback else 0) + 1:
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small: 4 reserved ids"
            + (" + 256 byte pieces" if byte_fallback else "")
            + " + at least one text piece"
        )
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=num_threads,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise TokenizerError(f"sentencepiece training failed: {error}") from error
    finally:
        os.unlink(corpus)
    return TextTokenizer.load(f"{prefix}.model")
