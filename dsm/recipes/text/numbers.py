"""Numbers as spoken words, English and French, for any size a sentence needs.

Below a million the spellers of the synthesized-text generator are used, so both corpora
write numbers alike ('two hundred and five', 'vingt et un', no hyphens in English,
traditional French hyphens); this module adds millions and billions, ordinals of any
size, years, decimals and roman numerals.
"""

from __future__ import annotations

from dsm.recipes.synth.text import english_number, french_number

_SCALES = ((10**12, "trillion", "billion"), (10**9, "billion", "milliard"),
           (10**6, "million", "million"))
LIMIT = 10**15


def english_cardinal(n: int) -> str:
    """0 <= n < 10**15 in English words: 'three million two hundred thousand'."""
    if not 0 <= n < LIMIT:
        raise ValueError(f"number out of range for words: {n}")
    for size, word, _ in _SCALES:
        if n >= size:
            high, rest = divmod(n, size)
            head = english_cardinal(high) + " " + word
            if rest == 0:
                return head
            return head + (" and " if rest < 100 else " ") + english_cardinal(rest)
    return english_number(n)


def french_cardinal(n: int, feminine: bool = False) -> str:
    """0 <= n < 10**15 in French words: 'deux millions trois cent mille'."""
    if not 0 <= n < LIMIT:
        raise ValueError(f"number out of range for words: {n}")
    for size, _, word in _SCALES:
        if n >= size:
            high, rest = divmod(n, size)
            head = french_cardinal(high) + " " + word + ("s" if high > 1 else "")
            return head if rest == 0 else head + " " + french_cardinal(rest, feminine)
    return french_number(n, feminine)


_EN_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                     "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def english_ordinal(n: int) -> str:
    """n >= 1 as an English ordinal: 'twenty first', 'one hundredth'."""
    if n < 1:
        raise ValueError(f"ordinal out of range: {n}")
    words = english_cardinal(n).split(" ")
    last = words[-1]
    if last in _EN_ORDINAL_WORDS:
        last = _EN_ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(words[:-1] + [last])


def french_ordinal(n: int, feminine: bool = False) -> str:
    """n >= 1 as a French ordinal: 'premier' / 'première', 'vingt et unième', 'cinquième'."""
    if n < 1:
        raise ValueError(f"ordinal out of range: {n}")
    if n == 1:
        return "première" if feminine else "premier"
    words = french_cardinal(n)
    cut = max(words.rfind(" "), words.rfind("-")) + 1
    head, last = words[:cut], words[cut:]
    if last == "cinq":
        last = "cinquième"
    elif last == "neuf":
        last = "neuvième"
    else:
        if last in ("cents", "vingts", "millions", "milliards"):
            last = last[:-1]
        last = (last[:-1] if last.endswith("e") else last) + "ième"
    return head + last


def english_year(year: int) -> str:
    """A year read the English way: 'nineteen eighty four', 'two thousand and five',
    'twenty twenty three', 'nineteen hundred', 'eleven oh six'."""
    if 2000 <= year < 2010 or not 1000 <= year < 10000:
        return english_cardinal(year)
    high, low = divmod(year, 100)
    if low == 0:
        return english_cardinal(high) + " hundred"
    if low < 10:
        return english_cardinal(high) + " oh " + english_cardinal(low)
    return english_cardinal(high) + " " + english_cardinal(low)


def decimal(whole: str, fraction: str, lang: str) -> str:
    """'3', '14' -> 'three point one four' / 'trois virgule quatorze' (French reads the
    fractional part as a number, after its leading zeros)."""
    if lang == "en":
        return (english_cardinal(int(whole)) + " point "
                + " ".join(english_cardinal(int(d)) for d in fraction))
    zeros = len(fraction) - len(fraction.lstrip("0"))
    tail = ["zéro"] * zeros + ([french_cardinal(int(fraction))] if fraction.strip("0") else [])
    return french_cardinal(int(whole)) + " virgule " + " ".join(tail)


_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_value(text: str) -> int | None:
    """The value of a well-formed roman numeral ('XIX' -> 19), or None."""
    if not text or any(c not in _ROMAN for c in text):
        return None
    total = 0
    for i, c in enumerate(text):
        value = _ROMAN[c]
        total += -value if i + 1 < len(text) and _ROMAN[text[i + 1]] > value else value
    return total if _to_roman(total) == text else None


def _to_roman(n: int) -> str:
    out = []
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                           (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                           (4, "IV"), (1, "I")):
        while n >= value:
            out.append(letters)
            n -= value
    return "".join(out)
