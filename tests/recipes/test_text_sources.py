"""`dsm data text`: spoken normalisation, sentence cleaning, the split by document, the
command end to end, and the installed Debian sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsm.cli import main
from dsm.recipes.text import sources as text_sources
from dsm.recipes.text.corpus import (
    TextCorpusError,
    directory_source,
    eval_documents,
    resolve_sources,
    write_text_corpus,
)
from dsm.recipes.text.normalize import normalize_sentence
from dsm.recipes.text.numbers import english_cardinal, french_cardinal, french_ordinal
from dsm.recipes.text.sentences import clean_paragraphs, split_sentences
from dsm.recipes.text.sources import Source, SourceUnavailable, man_paragraphs, parse_fortunes


@pytest.mark.parametrize("raw, spoken", [
    ("I have 3 cats and 21 dogs.", "I have three cats and twenty one dogs."),
    ("In 1984, he was born.", "In nineteen eighty four, he was born."),
    ("It was 2005 and then 2023.", "It was two thousand and five and then twenty twenty three."),
    ("She came 1st, he came 22nd.", "She came first, he came twenty second."),
    ("On March 3, 1984 we met.", "On March third, nineteen eighty four we met."),
    ("Born 4 July 1950.", "Born the fourth of July nineteen fifty."),
    ("It cost $5.50 today.", "It cost five dollars and fifty cents today."),
    ("A $1 coin and $2.5 million.", "A one dollar coin and two point five million dollars."),
    ("Prices rose 25% and 3.5% again.", "Prices rose twenty five percent and three point five "
                                       "percent again."),
    ("We meet at 10:30 p.m. or 7:05 or 9:00.", "We meet at ten thirty p m or seven oh five or "
                                               "nine o'clock."),
    ("Mr. Smith and Dr. Jones met St. Paul, e.g. on Sunday.",
     "Mister Smith and Doctor Jones met Saint Paul, for example, on Sunday."),
    ("Salt & pepper + 1,200 grains @ home.", "Salt and pepper plus one thousand two hundred "
                                             "grains at home."),
    ("Pi is about 3.14, not -2.", "Pi is about three point one four, not minus two."),
    ("The 1960s were loud -- very loud...", "The nineteen sixties were loud, very loud."),
    ("\u201cCaf\u00e9 (open)\u201d, she said", "Cafe open, she said."),
    ("Read pages 10-20 of 1990-1995.", "Read pages ten to twenty of nineteen ninety to nineteen "
                                       "ninety five."),
])
def test_english_is_written_as_spoken(raw: str, spoken: str) -> None:
    assert normalize_sentence(raw, "en") == spoken


@pytest.mark.parametrize("raw, spoken", [
    ("J'ai 3 chats et 21 chiens.", "J'ai trois chats et vingt et un chiens."),
    ("En 1984, il est né.", "En mille neuf cent quatre-vingt-quatre, il est né."),
    ("Le 1er janvier 2020 il a payé 3,50 €.",
     "Le premier janvier deux mille vingt il a payé trois euros cinquante."),
    ("Il est arrivé 2e puis 21e au XIXe siècle.",
     "Il est arrivé deuxième puis vingt et unième au dix-neuvième siècle."),
    ("Hausse de 25 % et 3,5 % ensuite.",
     "Hausse de vingt-cinq pour cent et trois virgule cinq pour cent ensuite."),
    ("Rendez-vous à 10h30 ou 8 h.", "Rendez-vous à dix heures trente ou huit heures."),
    ("M. Dupont et Mme Curie, p. ex. ici.",
     "Monsieur Dupont et madame Curie, par exemple, ici."),
    ("Il a 1 200 livres et 5 000 € !", "Il a mille deux cents livres et cinq mille euros!"),
    ("Elle a dit : « Bonjour ? »", "Elle a dit: Bonjour?"),
])
def test_french_is_written_as_spoken(raw: str, spoken: str) -> None:
    assert normalize_sentence(raw, "fr") == spoken


@pytest.mark.parametrize("raw, lang", [
    ("Figure 16.196 shows it.", "fr"), ("L'ISO 8859-13 encode le letton.", "fr"),
    ("The ISO 8859-13 set.", "en"), ("A 12345678901234567890 number.", "en")])
def test_ambiguous_numbers_keep_their_digits_to_be_refused(raw: str, lang: str) -> None:
    assert any(c.isdigit() for c in normalize_sentence(raw, lang))


def test_number_spellers_cover_large_numbers_and_french_ordinals() -> None:
    assert english_cardinal(3_200_005) == "three million two hundred thousand and five"
    assert french_cardinal(2_300_000) == "deux millions trois cent mille"
    assert french_cardinal(1_000_000_000) == "un milliard"
    assert [french_ordinal(n) for n in (1, 5, 9, 11, 80, 1000)] == [
        "premier", "cinquième", "neuvième", "onzième", "quatre-vingtième", "millième"]


def test_sentences_split_at_stops_but_not_after_abbreviations_or_initials() -> None:
    text = ("Mr. Brown met J. R. R. Tolkien. They talked! Did they eat? yes, they did, "
            "etc. The end.")
    assert split_sentences(text, "en") == [
        "Mister Brown met J. R. R. Tolkien.", "They talked!", "Did they eat?",
        "yes, they did, et cetera.", "The end."]
    assert split_sentences("Voici M. Martin. Il lit.", "fr") == [
        "Voici monsieur Martin.", "Il lit."]


def test_cleaning_drops_what_is_not_prose_with_its_reason() -> None:
    paragraphs = [
        "A black cat crossing your path signifies that the animal is going somewhere.\n"
        "\t\t-- Groucho Marx",
        "A MODERN FABLE",
        "See https://example.org for the real story of the cat.",
        "Type ls -la /etc to list the files of the cat.",
        "Use <b>bold</b> words for the cat please.",
        "Le chat est sur la table et il dort dans la maison.",
        "A number like 12345678901234567890 cannot be said here.",
        "Too short.",
        "The long sentence goes on and on with many words; it keeps going with even more "
        "words than anyone wants; the end comes at last.",
        "The cat sat on the mat.",
        "The following items are included:",
        "Abbreviation, n.: a short way of writing a word.",
        "The ship sailed on the sur-\nface of the sea.",
        "And God said unto Moses, I AM That I AM.",
        "The old IBM machine ran all night long.",
    ]
    cleaned = clean_paragraphs(paragraphs, "en", min_words=3, max_words=13)
    assert cleaned.sentences == [
        "A black cat crossing your path signifies that the animal is going somewhere.",
        "The long sentence goes on and on with many words.",
        "It keeps going with even more words than anyone wants.",
        "The end comes at last.",
        "The cat sat on the mat."]
    assert cleaned.dropped == {"attribution": 1, "heading": 1, "url": 1, "code": 1,
                               "markup": 1, "other_language": 1, "digits": 1,
                               "too_short": 1, "incomplete": 1, "symbols": 2,
                               "capitals": 2}


def test_fortune_files_and_man_pages_are_read_into_paragraphs() -> None:
    assert parse_fortunes("One fortune.\n%\nTwo\nlines.\n%\n") == ["One fortune.", "Two\nlines."]
    assert parse_fortunes("B\x08Bold word.\n%\n") == ["Bold word."]
    formatted = ("LS(1)\n\nNOM\n       ls - lister\n\nDESCRIPTION\n       Afficher les "
                 "fichiers du répertoire.\n\n       -a     tout afficher\n\nVOIR AUSSI\n"
                 "       dir(1)\n")
    assert man_paragraphs(formatted) == ["Afficher les fichiers du répertoire."]


# ---------------------------------------------------------------- the split by document

_ANIMALS = ["fox", "owl", "hare", "wolf", "bear", "crow", "deer", "lynx", "mole", "seal"]


def _marker(i: int) -> str:
    return "Zo" + "".join(chr(ord("a") + int(d)) for d in f"{i:03d}")


def _write_documents(folder: Path, count: int, per_document: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        marker = _marker(i)
        lines = [f"The {animal} named {marker} walked to the river at dawn."
                 for animal in _ANIMALS[:per_document]]
        (folder / f"doc{i:03d}.txt").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_the_split_never_shares_a_document_and_follows_the_seed(tmp_path: Path) -> None:
    folder = _write_documents(tmp_path / "docs", 20)
    source = directory_source("mine", "en", folder)
    outputs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_text_corpus(tmp_path / name, [source], seed=seed, eval_fraction=0.25,
                          progress=False)
        outputs[name] = {f: (tmp_path / name / f).read_bytes()
                         for f in ("train.en.txt", "eval.en.txt", "summary.json")}
    assert outputs["a"] == outputs["b"]
    assert outputs["a"]["eval.en.txt"] != outputs["c"]["eval.en.txt"]
    for name in outputs:
        train = outputs[name]["train.en.txt"].decode()
        evaluation = outputs[name]["eval.en.txt"].decode()
        held = {_marker(i) for i in range(20) if _marker(i) in evaluation}
        assert 0 < len(held) < 20
        assert not any(marker in train for marker in held)
        assert len(evaluation.splitlines()) == 4 * len(held)
        summary = json.loads(outputs[name]["summary.json"])
        assert len(summary["sources"]["mine"]["eval_documents"]) == len(held)


def test_a_train_cap_samples_one_source_and_leaves_eval_alone(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    folder = _write_documents(tmp_path / "docs", 20)
    argv = ["data", "text", "--sources", "", "--quiet", "--langs", "en",
            "--text-dir", f"en={folder}", "--eval-fraction", "0.25"]
    assert main([*argv, "--out", str(tmp_path / "all")]) == 0
    for name in ("capped", "again"):
        assert main([*argv, "--out", str(tmp_path / name), "--cap", f"dir:{folder}=7"]) == 0
    assert "(7 train of 60, capped" in capsys.readouterr().out
    full = (tmp_path / "all" / "train.en.txt").read_text().splitlines()
    capped = (tmp_path / "capped" / "train.en.txt").read_text().splitlines()
    assert len(full) == 60 and len(capped) == 7
    assert capped == [line for line in full if line in capped]  # a sample, in order
    assert (tmp_path / "capped" / "train.en.txt").read_bytes() == \
        (tmp_path / "again" / "train.en.txt").read_bytes()
    assert (tmp_path / "capped" / "eval.en.txt").read_bytes() == \
        (tmp_path / "all" / "eval.en.txt").read_bytes()
    summary = json.loads((tmp_path / "capped" / "summary.json").read_text())
    assert summary["train_caps"] == {f"dir:{folder}": 7}
    assert summary["sources"][f"dir:{folder}"]["train_sentences_before_cap"] == 60
    for cap, message in (("nope=3", "names nope"), (f"dir:{folder}=x", "SOURCE=N"),
                         (f"dir:{folder}=0", "at least 1")):
        assert main([*argv, "--out", str(tmp_path / "bad"), "--cap", cap]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_eval_documents_reach_the_fraction_and_keep_a_train_document() -> None:
    sizes = {f"d{i}": 10 for i in range(10)}
    held = eval_documents("src", sizes, 0.3, seed=3)
    assert len(held) == 3 and held <= set(sizes)
    assert eval_documents("src", {"only": 5}, 0.5, seed=0) == set()
    # a large document that would overshoot is passed over for smaller ones
    sizes = {"big": 50, **{f"s{i}": 5 for i in range(10)}}
    for seed in range(5):
        held = eval_documents("src", sizes, 0.1, seed)
        assert sum(sizes[d] for d in held) in (5, 10) and "big" not in held
    assert len(eval_documents("src", {"a": 1, "b": 1}, 0.9, seed=0)) == 1


# ---------------------------------------------------------------- the command


def test_data_text_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    en = _write_documents(tmp_path / "en", 10)
    fr = tmp_path / "fr"
    fr.mkdir()
    for i in range(4):
        (fr / f"page{i}.txt").write_text(
            f"Le chat numéro {i + 2} dort dans la maison du village.\n\n"
            f"Il a payé {i + 3},50 € le 1er mai 1984.\n\nhttp://exemple.fr est un lien.\n",
            encoding="utf-8")
    out = tmp_path / "out"
    code = main(["data", "text", "--out", str(out), "--sources", "", "--quiet",
                 "--text-dir", f"en={en}", "--text-dir", f"fr={fr}", "--eval-fraction", "0.2"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "eval.en.txt", "eval.fr.txt", "summary.json", "train.en.txt", "train.fr.txt"]
    french = (out / "train.fr.txt").read_text() + (out / "eval.fr.txt").read_text()
    assert "Il a payé cinq euros cinquante le premier mai mille neuf cent quatre-vingt-quatre." \
        in french
    assert "http" not in french
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"][f"dir:{fr}"]["dropped"] == {"url": 4}
    assert summary["langs"]["en"]["eval_sentences"] > 0
    assert 0.0 <= summary["langs"]["fr"]["eval_oov_rate"] <= 1.0
    printed = capsys.readouterr().out
    assert "OOV rate" in printed and "wrote" in printed
    # an existing corpus is kept unless --overwrite
    assert main(["data", "text", "--out", str(out), "--sources", "", "--quiet",
                 "--text-dir", f"en={en}", "--langs", "en"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--sources", "nope"], "unknown source 'nope'"),
    (["--langs", "de"], "unknown language 'de'"),
    (["--text-dir", "xx"], "LANG=FOLDER"),
    (["--eval-fraction", "1.5"], "eval fraction"),
    (["--min-words", "9", "--max-words", "4"], "min words"),
    (["--sources", ""], "no sources chosen"),
])
def test_data_text_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       extra: list[str], message: str) -> None:
    code = main(["data", "text", "--out", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_package_names_what_to_install(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    missing = Path(tmp_path / "absent")
    fake = Source("fortunes", "en", ("fortunes",), "test double",
                  lambda: text_sources.fortune_files(missing), text_sources.read_fortune_file)
    monkeypatch.setitem(text_sources.SOURCES, "fortunes", fake)
    code = main(["data", "text", "--out", str(tmp_path / "out"), "--quiet",
                 "--sources", "fortunes"])
    assert code == 2
    assert "apt-get install fortunes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nothing_kept_is_an_error_not_an_empty_corpus(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("See http://example.com now.\n\nTHE END\n")
    code = main(["data", "text", "--out", str(tmp_path / "out"), "--quiet", "--sources", "",
                 "--langs", "en", "--text-dir", f"en={folder}"])
    assert code == 2
    assert "no en sentence survived" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the installed packages


def test_the_installed_debian_sources_give_both_languages(tmp_path: Path) -> None:
    try:
        chosen = resolve_sources(text_sources.SOURCES, ("en", "fr"))
        for source in chosen:
            source.list_documents()
    except SourceUnavailable as error:  # `make test` installs them (Makefile system-deps)
        pytest.fail(str(error))
    summary = write_text_corpus(tmp_path / "real", chosen, max_documents=2, progress=False)
    for name, source in summary["sources"].items():
        assert source["documents"] == 2, name
    for lang in ("en", "fr"):
        lines = (tmp_path / "real" / f"train.{lang}.txt").read_text().splitlines()
        assert len(lines) > 20
        assert all(line[0].isupper() and line[-1] in ".!?" for line in lines)
        assert not any(c.isdigit() for line in lines for c in line)


def test_unknown_sources_are_rejected_before_reading() -> None:
    with pytest.raises(TextCorpusError, match="known sources"):
        resolve_sources(["fortunes", "gutenberg"], ("en",))


# ---------------------------------------------------------------- dsm data synth --text-file


def test_synth_speaks_sentence_files_per_split_and_keeps_its_default(tmp_path: Path) -> None:
    from dsm.recipes.synth.corpus import CorpusError, Job, make_item, synthesize_corpus

    # without files, the generated sentences are exactly those drawn before files existed
    job = Job(3, 1, "en", False, ("espeak", "flite"), 0.1, 24000)
    assert make_item(job)[0].text == \
        "On Sunday, Arthur and Martin are going to clean eighty eight pictures."
    train = tmp_path / "train.en.txt"
    train.write_text("The old man walked his dog to the market.\n"
                     "Rain fell on the quiet village all night.\n", encoding="utf-8")
    held = tmp_path / "eval.en.txt"
    held.write_text("A stranger asked the way to the harbour.\n", encoding="utf-8")
    out = tmp_path / "corpus"
    synthesize_corpus(out, "en", hours=12 / 3600, seed=0, engines=("espeak",),
                      eval_fraction=0.5, progress=False, text_files=(str(train),),
                      eval_text_files=(str(held),), text_share=1.0)
    rows = {split: [json.loads(line) for line in (out / f"{split}.jsonl").open()]
            for split in ("train", "eval")}
    assert rows["train"] and rows["eval"]
    assert {r["text"] for r in rows["train"]} <= set(train.read_text().splitlines())
    assert {r["text"] for r in rows["eval"]} == set(held.read_text().splitlines())
    assert all(len(r["words"]) == len(r["text"].split()) for r in rows["train"] + rows["eval"])
    assert json.loads((out / "corpus.json").read_text())["text_files"] == [str(train)]
    with pytest.raises(CorpusError, match="named for language fr"):
        synthesize_corpus(tmp_path / "x", "en", hours=0.001, progress=False,
                          text_files=(str(tmp_path / "train.fr.txt"),))
    with pytest.raises(CorpusError, match="not found"):
        synthesize_corpus(tmp_path / "x", "en", hours=0.001, progress=False,
                          text_files=(str(tmp_path / "absent.txt"),))
    with pytest.raises(CorpusError, match="parallel"):
        synthesize_corpus(tmp_path / "x", hours=0.001, parallel=True, progress=False,
                          text_files=(str(train),))
    assert not (tmp_path / "x").exists()


def test_synth_command_takes_text_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    sentences = tmp_path / "train.fr.txt"
    sentences.write_text("Le vieux chat dort au soleil du jardin.\n", encoding="utf-8")
    base = ["data", "synth", "--hours", str(3 / 3600), "--quiet", "--seed", "1"]
    assert main([*base, "--lang", "en", "--out", str(tmp_path / "a"),
                 "--text-file", str(sentences)]) == 2
    assert "named for language fr" in capsys.readouterr().err
    assert main([*base, "--lang", "fr", "--out", str(tmp_path / "b"), "--eval-fraction", "0",
                 "--text-file", str(sentences), "--text-share", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "b" / "train.jsonl").open()]
    assert rows and {r["text"] for r in rows} == {"Le vieux chat dort au soleil du jardin."}
