"""From a document's paragraphs to clean spoken sentences, each refusal with its reason.

Lines that are not prose (attributions such as '-- Mark Twain', all-capital headings,
lines of code or markup, URLs) are dropped before paragraphs are split into sentences;
sentences are split at a full stop, question or exclamation mark followed by a space
and a letter or digit, after abbreviations are expanded (so 'Mr. Smith' is not a
boundary) and never after an initial ('J. R. R. Tolkien'). A sentence longer than the
word limit is cut into its clauses at ';' and ':' (the King James Bible's long verses).
A sentence is refused when it holds code, a URL, markup, the other language, or, once
normalised, anything but words and punctuation, or too few or too many words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dsm.recipes.text.normalize import (
    expand_abbreviations,
    normalize_sentence,
    tidy_punctuation,
    unify_characters,
)

# reasons a line or sentence is dropped (the summary counts each)
LINE_REASONS = ("attribution", "heading", "code_line")
SENTENCE_REASONS = ("url", "code", "markup", "other_language", "incomplete", "digits",
                    "symbols", "capitals", "too_short", "too_long", "duplicate")

_URL = re.compile(r"https?://|ftp://|www\.|\b[\w.-]+@[\w-]+\.\w|\b\w+\.(?:com|org|net|html?)\b",
                  re.IGNORECASE)
_MARKUP = re.compile(r"</?[a-zA-Z][^>]*>|&[a-z]+;|&#\d+;|\\f[BIRP]|\\\(|^\.[A-Za-z]{1,2}\s")
_CODE = re.compile(
    r"[{}\[\]<>|\\=*_~^#]"            # braces, brackets, pipes, assignments, globs
    r"|(?:^|\s)--?[A-Za-z]"           # command-line options
    r"|\w/\w|(?:^|\s)[/~]\w"          # paths
    r"|\$\w|\w\(\d?\w*\)"             # shell variables, calls, man page refs 'ls(1)'
    r"|\b[a-z]+\.[a-z]{1,4}\b"        # file names
    r"|\b\w+_\w+\b|;\s*$|\x00")      # identifiers, statements; \x00 marks code in HTML
_ATTRIBUTION = re.compile(r"^\s*(?:--|—|–|~)\s*\S")
_LETTER = re.compile(r"[^\W\d_]")
_CAPITALS = re.compile(r"\b[A-ZÀ-ÖØ-Þ]{2,}\b")
_EN_LETTERS = re.compile(r"^[A-Za-z' \-.,;:!?]+$")
_FR_LETTERS = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿœŒæÆ' \-.,;:!?]+$")

_FUNCTION_WORDS = {
    "en": frozenset("the and of to is in that it was for with as his he you not be are this "
                    "have but they at from by which or we an were her she my all their there "
                    "what would if when who will no so do".split()),
    "fr": frozenset("le la les de des du et est un une que qui dans pour pas sur au aux il "
                    "elle ne se ce sont avec par en plus vous nous ou mais ses son sa cette "
                    "leur être été fait peut".split()),
}


@dataclass
class Cleaned:
    """The sentences kept from some text and the count of each drop reason."""

    sentences: list[str]
    dropped: dict[str, int]


def is_heading(line: str) -> bool:
    """An all-capital line ('A MODERN FABLE', 'DESCRIPTION'): a title, not a sentence."""
    letters = _LETTER.findall(line)
    return len(letters) >= 2 and all(c.isupper() for c in letters)


def line_reason(line: str) -> str | None:
    """Why a line of a document is not prose, or None."""
    if _ATTRIBUTION.match(line):
        return "attribution"
    if is_heading(line):
        return "heading"
    stripped = line.strip()
    if stripped and (stripped.startswith(("$ ", "# ", ">>>", "//", "/*")) or
                     len(re.findall(r"[{}\[\]<>|=;$]", stripped)) * 10 > len(stripped)):
        return "code_line"
    return None


def split_sentences(paragraph: str, lang: str) -> list[str]:
    """A paragraph's sentences, abbreviations expanded (see the module docstring)."""
    text = expand_abbreviations(unify_characters(paragraph), lang)
    pieces = re.split(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(«]?[^\W_])", text)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and re.search(r"(?:^|\s)[A-Z]\.$", sentences[-1]):  # an initial
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences if s.strip()]


def language_of(sentence: str) -> str | None:
    """'en' or 'fr' when one language's function words clearly dominate, else None."""
    words = re.findall(r"[^\W\d_]+", sentence.lower())
    counts = {lang: sum(w in vocabulary for w in words)
              for lang, vocabulary in _FUNCTION_WORDS.items()}
    if counts["en"] > counts["fr"]:
        return "en"
    if counts["fr"] > counts["en"]:
        return "fr"
    return None


def raw_reason(sentence: str, lang: str) -> str | None:
    """Why a sentence, before normalisation, cannot be kept, or None."""
    if _URL.search(sentence):
        return "url"
    if _MARKUP.search(sentence):
        return "markup"
    if _CODE.search(sentence):
        return "code"
    if sentence.rstrip().endswith(":"):  # introduces a list or an example left out
        return "incomplete"
    other = language_of(sentence)
    if other is not None and other != lang:
        return "other_language"
    return None


def spoken_reason(sentence: str, lang: str, min_words: int, max_words: int) -> str | None:
    """Why a normalised sentence cannot be kept, or None."""
    if re.search(r"\d", sentence):
        return "digits"
    if not (_EN_LETTERS if lang == "en" else _FR_LETTERS).match(sentence):
        return "symbols"
    if re.search(r"(?:^|\s)[.,;:!?'-]|(?<!\b[A-Z])[.!?] |[.!?][,;:]|\b[a-z]+[A-Z]"
                 r"|-(?=[\s.,;:!?]|$)", sentence):
        # a lost name ('. et ..'), a stop inside ('n.: a word'), 'lB'-like code, or a
        # word cut at a line end ('sur-')
        return "symbols"
    if _CAPITALS.search(sentence):
        # an acronym or a shouted word: the synthesizers spell some and say others, so the
        # speech would not match the text ('IBM', 'I AM', 'GIMP')
        return "capitals"
    words = sum(1 for w in sentence.split() if _LETTER.search(w))
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    return None


def clean_paragraphs(paragraphs: list[str], lang: str, min_words: int,
                     max_words: int) -> Cleaned:
    """The spoken sentences of a document's paragraphs (lines within a paragraph are
    joined), with the count of each drop reason; duplicates are left to the caller."""
    dropped: dict[str, int] = {}
    kept: list[str] = []
    for paragraph in paragraphs:
        lines = []
        for line in paragraph.splitlines():
            reason = line_reason(line)
            if reason is None:
                lines.append(line)
            elif line.strip():
                dropped[reason] = dropped.get(reason, 0) + 1
        for sentence in split_sentences(" ".join(lines), lang):
            reason = raw_reason(sentence, lang)
            spoken = ""
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            for spoken in clauses(normalize_sentence(sentence, lang), lang, max_words):
                reason = spoken_reason(spoken, lang, min_words, max_words)
                if reason is None:
                    kept.append(spoken)
                else:
                    dropped[reason] = dropped.get(reason, 0) + 1
    return Cleaned(kept, dropped)


def clauses(sentence: str, lang: str, max_words: int) -> list[str]:
    """A sentence longer than `max_words` as its clauses (cut at ';' and ':'), each one
    a sentence; shorter ones, or ones with no such cut, unchanged."""
    if len(sentence.split()) <= max_words or not re.search(r"[;:] ", sentence):
        return [sentence]
    return [tidy_punctuation(part, lang) for part in re.split(r"[;:] ", sentence)]
