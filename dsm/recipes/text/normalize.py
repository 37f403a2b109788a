"""Sentences written the way a speaker says them, in English and French.

The synthesized corpora write what a speech model must read or write: words only, in
sentence case, punctuation stuck to the word before it, single spaces, English in ASCII
letters (flite reads ASCII). This module turns a cleaned sentence into that form:
abbreviations, currency, percentages, times, dates, ordinals, years, decimals, plain
numbers and a few symbols become words; quotes and brackets go; a sentence that still
holds a digit or a symbol afterwards is refused by the caller (see `sentences.py`), so
nothing is ever spoken wrongly on a guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from dsm.recipes.synth.text import ascii_letters
from dsm.recipes.text.numbers import (
    LIMIT,
    decimal,
    english_cardinal,
    english_ordinal,
    english_year,
    french_cardinal,
    french_ordinal,
    roman_value,
)

EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December")
FR_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre")

# (pattern, replacement); patterns match whole words, case-sensitively
EN_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"Mr\.", "Mister"), (r"Mrs\.", "Missus"), (r"Ms\.", "Miz"), (r"Dr\.", "Doctor"),
    (r"Prof\.", "Professor"), (r"Jr\.", "Junior"), (r"Sr\.", "Senior"),
    (r"St\.(?= [A-Z])", "Saint"), (r"St\.", "Street"), (r"Mt\.", "Mount"),
    (r"Capt\.", "Captain"), (r"Lt\.", "Lieutenant"), (r"Col\.", "Colonel"),
    (r"Sgt\.", "Sergeant"), (r"Gov\.", "Governor"), (r"Sen\.", "Senator"),
    (r"Rev\.(?= [A-Z])", "Reverend"), (r"Inc\.", "Incorporated"), (r"Ltd\.", "Limited"),
    (r"Co\.", "Company"), (r"[Vv]s\.", "versus"), (r"[Ee]\.g\.,?", "for example,"),
    (r"[Ii]\.e\.,?", "that is,"), (r"[Ee]tc\.", "et cetera."), (r"[Aa]pprox\.", "approximately"),
    (r"No\.(?= ?\d)", "number"), (r"U\.S\.A\.", "U S A"), (r"U\.S\.", "U S"),
    (r"U\.K\.", "U K"), (r"[Aa]\.[Mm]\.", "a m"), (r"[Pp]\.[Mm]\.", "p m"),
)
FR_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"MM\.", "messieurs"), (r"M\.(?= [A-ZÉ])", "monsieur"), (r"Mmes", "mesdames"),
    (r"Mme", "madame"), (r"Mlles", "mesdemoiselles"), (r"Mlle", "mademoiselle"),
    (r"Dr", "docteur"), (r"Pr", "professeur"), (r"Ste(?=[ -][A-ZÉ])", "sainte"),
    (r"St(?=[ -][A-ZÉ])", "saint"), (r"[Ee]tc\.", "et cetera."),
    (r"[Pp]\. ?ex\.,?", "par exemple,"), (r"[Cc]\.-?à-d\.,?", "c'est-à-dire,"),
    (r"[Cc]f\.", "voir"), (r"[Nn]°", "numéro"), (r"[Ee]nv\.", "environ"),
    (r"av\. J\.-C\.", "avant Jésus-Christ"), (r"apr\. J\.-C\.", "après Jésus-Christ"),
    (r"J\.-C\.", "Jésus-Christ"), (r"Cie", "compagnie"), (r"qqch\.?", "quelque chose"),
    (r"qqn\.?", "quelqu'un"),
)
ABBREVIATIONS = {"en": EN_ABBREVIATIONS, "fr": FR_ABBREVIATIONS}
# one alternation a language, group k for abbreviation k, whole words only
_ABBREVIATION_RE = {lang: re.compile(r"(?<![\w.])(?:" + "|".join(f"({p})" for p, _ in table)
                                     + r")(?!\w)")
                    for lang, table in ABBREVIATIONS.items()}

_SYMBOLS = {"en": {"&": " and ", "+": " plus ", "@": " at ", "°": " degrees "},
            "fr": {"&": " et ", "+": " plus ", "@": " arobase ", "°": " degrés "}}
_UNITS = {"en": {"km": "kilometers", "kg": "kilograms", "cm": "centimeters",
                 "mm": "millimeters", "mph": "miles per hour", "km/h": "kilometers per hour"},
          "fr": {"km": "kilomètres", "kg": "kilos", "cm": "centimètres", "mm": "millimètres",
                 "km/h": "kilomètres heure", "Go": "gigaoctets", "Mo": "mégaoctets",
                 "ko": "kilooctets"}}
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"),
               "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}
_FR_CURRENCIES = {"$": ("dollar", "dollars"), "€": ("euro", "euros"), "£": ("livre", "livres")}


def _sub(pattern: str, replace: Callable[[re.Match], str], text: str) -> str:
    return re.sub(pattern, replace, text)


def unify_characters(text: str) -> str:
    """One spelling of quotes, apostrophes, dashes, spaces and ellipses."""
    text = unicodedata.normalize("NFC", text)
    for old, new in (("\u2019", "'"), ("\u2018", "'"), ("`", "'"), ("\u201c", '"'),
                     ("\u201d", '"'), ("\u00ab", '"'), ("\u00bb", '"'), ("\u2026", "..."),
                     ("\u00a0", " "), ("\u202f", " "), ("\u2009", " "), ("\u2013", " - "),
                     ("\u2014", " - "), ("\u2212", "-"), ("\u0153", "œ")):
        text = text.replace(old, new)
    return re.sub(r"\s+", " ", text).strip()


def expand_abbreviations(text: str, lang: str) -> str:
    """Common abbreviations as words ('Mr.' -> 'Mister', 'M. Dupont' -> 'monsieur
    Dupont'); 'etc.' keeps its full stop so it can still end a sentence."""
    text = _ABBREVIATION_RE[lang].sub(
        lambda m: ABBREVIATIONS[lang][(m.lastindex or 1) - 1][1], text)
    text = text.replace("et cetera. ,", "et cetera,").replace("et cetera..", "et cetera.")
    return re.sub(r"et cetera\.(?= [a-zà-ÿ]|[,;:])", "et cetera", text)


def _number(text: str, lang: str, feminine: bool = False) -> str:
    digits = re.sub(r"[ ,.]", "", text) if lang == "en" else re.sub(r"[ .]", "", text)
    value = int(digits)
    if value >= LIMIT:  # left as digits: the sentence is refused
        return text
    return english_cardinal(value) if lang == "en" else french_cardinal(value, feminine)


# a number with optional thousands grouping: 1,000,000 (en) / 1 000 000 (fr; a dotted
# 16.196 is more often a section number than sixteen thousand)
_EN_INT = r"\d{1,3}(?:,\d{3})+|\d+"
_FR_INT = r"\d{1,3}(?: \d{3})+|\d+"


def _money_en(match: re.Match) -> str:
    symbol, whole, cents, scale = match.group(1), match.group(2), match.group(3), match.group(4)
    one, many, sub_one, sub_many = _CURRENCIES[symbol]
    if scale:
        amount = decimal(whole, cents, "en") if cents else _number(whole, "en")
        return f"{amount} {scale} {many}"
    value = int(whole.replace(",", ""))
    words = f"{english_cardinal(value)} {one if value == 1 else many}"
    if cents and int(cents.ljust(2, "0")):
        c = int(cents.ljust(2, "0")[:2])
        words += f" and {english_cardinal(c)} {sub_one if c == 1 else sub_many}"
    return words


def _money_fr(whole: str, cents: str | None, symbol: str, scale: str | None) -> str:
    one, many = _FR_CURRENCIES[symbol]
    if scale:
        amount = decimal(whole, cents, "fr") if cents else _number(whole, "fr")
        return f"{amount} {scale} de {many}"
    value = int(re.sub(r"[ .]", "", whole))
    words = f"{french_cardinal(value)} {one if value <= 1 else many}"
    if cents and int(cents.ljust(2, "0")):
        words += " " + french_cardinal(int(cents.ljust(2, "0")[:2]))
    return words


def _range(match: re.Match, word: str) -> str:
    """'1990-1995' -> '1990 to 1995' when the second number is larger; otherwise the
    digits stay (a name such as 'ISO 8859-13') and the sentence is refused."""
    low, high = int(match.group(1)), int(match.group(2))
    return f"{match.group(1)} {word} {match.group(2)}" if low < high else match.group(0)


def _english_numbers(text: str) -> str:
    months = "|".join(EN_MONTHS)
    # currency: $5, $5.50, $1.5 million, €20, £3
    text = _sub(r"([$€£]) ?(" + _EN_INT + r")(?:\.(\d{1,2}))?(?: (million|billion|thousand))?"
                r"(?!\w)", _money_en, text)
    text = _sub(r"(?<![\w.,])(" + _EN_INT + r")(?:\.(\d+))? ?%",
                lambda m: (decimal(m.group(1).replace(",", ""), m.group(2), "en")
                           if m.group(2) else _number(m.group(1), "en")) + " percent", text)
    # ISO dates 1984-03-05
    text = _sub(r"\b(\d{4})-(\d{2})-(\d{2})\b",
                lambda m: (f"{EN_MONTHS[int(m.group(2)) - 1]} {english_ordinal(int(m.group(3)))}, "
                           f"{english_year(int(m.group(1)))}") if 1 <= int(m.group(2)) <= 12
                and 1 <= int(m.group(3)) <= 31 else m.group(0), text)
    # times: 10:30, 7:05 pm, 10:00
    text = _sub(r"\b([01]?\d|2[0-3]):([0-5]\d)\b",
                lambda m: english_cardinal(int(m.group(1))) + (
                    " o'clock" if m.group(2) == "00" else
                    " oh " + english_cardinal(int(m.group(2))) if m.group(2)[0] == "0" else
                    " " + english_cardinal(int(m.group(2)))), text)
    text = re.sub(r"o'clock (a m|p m)", r"\1", text)
    # dates: March 3, 1984 / March 3rd / 3 March / 3rd of March
    text = _sub(r"\b(" + months + r") (\d{1,2})(?:st|nd|rd|th)?\b(?!:)",
                lambda m: f"{m.group(1)} {english_ordinal(int(m.group(2)))}"
                if 1 <= int(m.group(2)) <= 31 else m.group(0), text)
    text = _sub(r"\b(\d{1,2})(?:st|nd|rd|th)? (" + months + r")\b",
                lambda m: f"the {english_ordinal(int(m.group(1)))} of {m.group(2)}"
                if 1 <= int(m.group(1)) <= 31 else m.group(0), text)
    text = re.sub(r"\bthe the\b", "the", text)
    # ordinals: 1st, 22nd, 103rd, 4th
    text = _sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: english_ordinal(int(m.group(1))), text)
    # decades: 1960s, the '60s
    text = _sub(r"\b(1\d|20)(\d)0'?s\b",
                lambda m: english_year(int(m.group(1) + m.group(2) + "0"))[:-1] + "ies"
                if m.group(2) != "0" else m.group(0), text)
    # ranges: 1990-1995, 10-20
    text = _sub(r"\b(\d+) ?- ?(\d+)\b", lambda m: _range(m, "to"), text)
    # years: a lone four-digit number from 1100 to 2099
    text = _sub(r"(?<![\w.,$€£-])(1[1-9]\d\d|20\d\d)(?!\w|%|[.,]\d)",
                lambda m: english_year(int(m.group(1))), text)
    # decimals, then integers (negative ones too)
    text = _sub(r"(?<![\w.,])(-)?(\d+)\.(\d+)(?![\w.,]\d)",
                lambda m: ("minus " if m.group(1) else "") + decimal(m.group(2), m.group(3), "en"),
                text)
    text = _sub(r"(?<![\w.,])(?<!\d-)(-)?(" + _EN_INT + r")(?!\w|[.,-]\d)",
                lambda m: ("minus " if m.group(1) else "") + _number(m.group(2), "en"), text)
    return text


def _french_numbers(text: str) -> str:
    months = "|".join(FR_MONTHS)
    money = r"(" + _FR_INT + r")(?:,(\d{1,2}))?(?: (millions?|milliards?))?"
    text = _sub(money + r" ?([€$£])",
                lambda m: _money_fr(m.group(1), m.group(2), m.group(4), m.group(3)), text)
    text = _sub(r"([€$£]) ?" + money,
                lambda m: _money_fr(m.group(2), m.group(3), m.group(1), m.group(4)), text)
    text = _sub(r"(?<![\w.,])(" + _FR_INT + r")(?:,(\d+))? ?%",
                lambda m: (decimal(re.sub(r"[ .]", "", m.group(1)), m.group(2), "fr")
                           if m.group(2) else _number(m.group(1), "fr")) + " pour cent", text)
    text = _sub(r"\b(\d{4})-(\d{2})-(\d{2})\b",
                lambda m: (f"{_fr_day(int(m.group(3)))} {FR_MONTHS[int(m.group(2)) - 1]} "
                           f"{french_cardinal(int(m.group(1)))}") if 1 <= int(m.group(2)) <= 12
                and 1 <= int(m.group(3)) <= 31 else m.group(0), text)
    # times: 10h30, 10 h 30, 10h, 10:30
    text = _sub(r"\b([01]?\d|2[0-3]) ?(?:h|:) ?([0-5]\d)?\b(?!\w)", _fr_time, text)
    text = _sub(r"\b1(?:er|re|ère) (" + months + r")\b", lambda m: "premier " + m.group(1), text)
    # ordinals: 1er, 1re, 2e, 2ème, 3eme, 2nd, 2nde, XIXe
    text = _sub(r"\b1(er|re|ère)\b", lambda m: "premier" if m.group(1) == "er" else "première",
                text)
    text = _sub(r"\b2(nd|nde)\b", lambda m: "second" if m.group(1) == "nd" else "seconde", text)
    text = _sub(r"\b(\d+)(?:e|ème|eme|è)\b", lambda m: french_ordinal(int(m.group(1))), text)
    text = _sub(r"\b([IVX]|[IVXLCDM]{2,})(?:e|ème)\b",
                lambda m: french_ordinal(v) if (v := roman_value(m.group(1))) else m.group(0), text)
    text = _sub(r"\b([IVXLCDM]+)(er|re)\b",
                lambda m: ("premier" if m.group(2) == "er" else "première")
                if m.group(1) == "I" else m.group(0), text)
    text = _sub(r"\b(\d+) ?- ?(\d+)\b", lambda m: _range(m, "à"), text)
    text = _sub(r"(?<![\w.,])(-)?(\d+),(\d+)(?![\w.,]\d)",
                lambda m: ("moins " if m.group(1) else "") + decimal(m.group(2), m.group(3), "fr"),
                text)
    text = _sub(r"(?<![\w.,])(?<!\d-)(-)?(" + _FR_INT + r")(?!\w|[.,-]\d)",
                lambda m: ("moins " if m.group(1) else "") + _number(m.group(2), "fr"), text)
    return text


def _fr_day(day: int) -> str:
    return "premier" if day == 1 else french_cardinal(day)


def _fr_time(match: re.Match) -> str:
    hours = int(match.group(1))
    words = french_cardinal(hours, feminine=True) + (" heure" if hours <= 1 else " heures")
    if match.group(2) and int(match.group(2)):
        words += " " + french_cardinal(int(match.group(2)), feminine=True)
    return words


def _units_and_symbols(text: str, lang: str) -> str:
    for unit, words in _UNITS[lang].items():
        text = re.sub(r"(?<=\d) ?" + re.escape(unit) + r"(?!\w)", " " + words, text)
    for symbol, words in _SYMBOLS[lang].items():
        text = text.replace(symbol, words)
    return text


def tidy_punctuation(text: str, lang: str) -> str:
    """Quotes and brackets out, dashes to commas, punctuation stuck to the word before,
    single spaces, a capital first letter and a final stop."""
    text = re.sub(r'["()]', " ", text)
    text = re.sub(r"(?<=\s)'|'(?=\s)|^'|'$", " ", text)        # quoting apostrophes
    text = re.sub(r"\s+-+\s+|--+", ", ", text)                 # dashes between words
    text = re.sub(r"\.\.\.+(?=.)", ",", text)                  # a pause, not an end
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:[,;:]+)", r"\1", text)
    text = re.sub(r"[,;:]+([.!?])", r"\1", text)
    text = re.sub(r"([.!?])[.!?]*(?=[.!?])", "", text)
    text = re.sub(r"([,;:!?.])(?=[^\s,;:!?.])", r"\1 ", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;:")
    text = re.sub(r"^[.!?,;: ]+", "", text)
    if not text:
        return text
    if text[-1] in ",;:":
        text = text[:-1]
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:]


def normalize_sentence(text: str, lang: str) -> str:
    """A cleaned sentence in spoken words (see the module docstring); it may still hold a
    digit or symbol that no rule covers."""
    if lang not in ABBREVIATIONS:
        raise ValueError(f"unknown language {lang!r}: expected en or fr")
    text = unify_characters(text)
    text = expand_abbreviations(text, lang)
    text = _units_and_symbols(text, lang)
    text = _english_numbers(text) if lang == "en" else _french_numbers(text)
    if lang == "en":
        text = ascii_letters(text)
    return tidy_punctuation(text, lang)
