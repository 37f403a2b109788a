"""Text tokenizer: training, loading, reserved ids, clear errors, the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm

from dsm.cli import build_parser
from dsm.streams.testing import train_tiny_tokenizer
from dsm.streams.tokenizer import (
    PAD_ID,
    WORD_START_ID,
    TextTokenizer,
    TokenizerError,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_trained_model_reserves_the_stream_ids(tokenizer: TextTokenizer) -> None:
    assert (tokenizer.pad_id, tokenizer.word_start_id) == (PAD_ID, WORD_START_ID) == (3, 0)
    assert tokenizer.id_to_piece(3) == "<pad>" and tokenizer.id_to_piece(0) == "<unk>"
    assert 260 < tokenizer.vocab_size <= 400
    # unseen characters go through byte pieces, never a reserved id
    for text in ["the cat", "Zürich 1984 ☃", "œuvre élève"]:
        ids = tokenizer.encode(text)
        assert ids and not set(ids) & {0, 3}
        assert tokenizer.decode(ids) == text


def test_decode_skips_stream_tokens(tokenizer: TextTokenizer) -> None:
    ids = tokenizer.encode("river")
    assert tokenizer.decode([3, 0, *ids, 3, -1]) == "river"
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size + 5])


def test_load_existing_model_file(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    copy = tmp_path / "copied.model"
    copy.write_bytes(Path(tokenizer.path).read_bytes())
    loaded = TextTokenizer.load(copy)
    assert loaded.encode("seven hundred") == tokenizer.encode("seven hundred")
    assert loaded.vocab_size == tokenizer.vocab_size


def test_missing_or_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        TextTokenizer.load(tmp_path / "nope.model")
    with pytest.raises(TokenizerError, match="not a file"):
        TextTokenizer.load(tmp_path)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        TextTokenizer.load(garbage)


def test_unknown_characters_without_byte_fallback_are_an_error(tmp_path: Path) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["abc abd abe"] * 50), model_prefix=str(tmp_path / "nofb"),
        vocab_size=12, unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2,
        hard_vocab_limit=False,
    )
    tokenizer = TextTokenizer.load(tmp_path / "nofb.model")
    assert tokenizer.decode(tokenizer.encode("abc")) == "abc"
    with pytest.raises(TokenizerError, match="reserved id"):
        tokenizer.encode("xyz")


def test_training_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no text"):
        train_tokenizer(["", "  "], tmp_path / "t", vocab_size=400)
    with pytest.raises(TokenizerError, match="too small"):
        train_tokenizer(["hello"], tmp_path / "t", vocab_size=100)


def test_data_tokenizer_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the cat number {i} sat on the mat" for i in range(200)))
    manifest = tmp_path / "train.jsonl"
    rows = [{"audio": "a.wav", "text": "bonjour le chat noir"}, {"audio": "b.wav"},
            {"audio": "c.wav", "text": "   "}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parser = build_parser()
    args = parser.parse_args(["data", "tokenizer", "--text", str(text), "--manifest",
                              str(manifest), "--out", str(tmp_path / "out" / "tok"),
                              "--vocab-size", "320"])
    assert args._main(args) == 0
    output = capsys.readouterr().out
    assert "skipped 2 manifest row(s) without text" in output
    tokenizer = TextTokenizer.load(tmp_path / "out" / "tok.model")
    assert tokenizer.decode(tokenizer.encode("bonjour le chat")) == "bonjour le chat"
    bad = parser.parse_args(["data", "tokenizer", "--text", str(tmp_path / "missing.txt"),
                             "--out", str(tmp_path / "x")])
    assert bad._main(bad) == 1
    assert "text file not found" in capsys.readouterr().out


def test_data_tokenizer_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "tokenizer", "--help"])
    output = capsys.readouterr().out
    assert "sentencepiece" in output and "--vocab-size" in output and "word-start" in output
