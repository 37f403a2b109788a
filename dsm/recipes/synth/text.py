"""Generated sentences for synthesized corpora, in English and French, in exact pairs.

Every sentence comes from one of a dozen sentence shapes (possession with counts, places,
times, dates, ages, prices, weather, questions, plans, likes, travel, ...) filled from a
bilingual lexicon (nouns with French gender and plurals, adjectives with their four French
forms, verbs with past participles and infinitives, names with gender, cities, weekdays,
relatives). Each shape writes the English and the French sentence from the same choices,
so the French is an exact translation by construction (French articles, elision,
contractions `du`/`au`, adjective agreement and placement, `un`/`une` agreement are all
handled by the shape). Numbers, times, years and prices are spelled out in words
(`twenty seven`, `vingt-sept`), because the corpus text is what a speech model must write.

Words are separated by single spaces and punctuation sticks to the word before it, so a
sentence's whitespace tokens are exactly the words of the manifest.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

LANGS = ("en", "fr")

# ---------------------------------------------------------------- numbers as words

_EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
            "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
            "ninety"]
_FR_ONES = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
            "dix", "onze", "douze", "treize", "quatorze", "quinze", "seize", "dix-sept",
            "dix-huit", "dix-neuf"]
_FR_TENS = ["", "", "vingt", "trente", "quarante", "cinquante", "soixante"]


def english_number(n: int) -> str:
    """0 <= n < 1_000_000 in English words, without hyphens: 'two hundred and five'."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range for words: {n}")
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _EN_TENS[tens] + ("" if ones == 0 else " " + _EN_ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = _EN_ONES[hundreds] + " hundred"
        return head if rest == 0 else head + " and " + english_number(rest)
    thousands, rest = divmod(n, 1000)
    head = english_number(thousands) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + english_number(rest)


def french_number(n: int, feminine: bool = False) -> str:
    """0 <= n < 1_000_000 in French words (1990 spelling rules for hyphens are not used:
    traditional hyphenation below one hundred, e.g. 'vingt et un', 'quatre-vingt-dix')."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range for words: {n}")
    if n < 20:
        word = _FR_ONES[n]
        return "une" if (feminine and n == 1) else word
    if n < 100:
        if n < 70:
            tens, ones = divmod(n, 10)
            base = _FR_TENS[tens]
            if ones == 0:
                return base
            if ones == 1:
                return base + " et " + ("une" if feminine else "un")
            return base + "-" + _FR_ONES[ones]
        if n < 80:  # soixante-dix .. soixante-dix-neuf, 71 = soixante et onze
            rest = n - 60
            return "soixante et onze" if rest == 11 else "soixante-" + _FR_ONES[rest]
        rest = n - 80  # quatre-vingts, quatre-vingt-un, quatre-vingt-dix ...
        if rest == 0:
            return "quatre-vingts"
        if rest == 1 and feminine:
            return "quatre-vingt-une"
        return "quatre-vingt-" + _FR_ONES[rest]
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        head = "cent" if hundreds == 1 else _FR_ONES[hundreds] + (" cents" if rest == 0 else " cent")
        return head if rest == 0 else head + " " + french_number(rest, feminine)
    thousands, rest = divmod(n, 1000)
    head = "mille" if thousands == 1 else french_number(thousands) + " mille"
    if head.endswith("quatre-vingts mille"):
        head = head.replace("quatre-vingts mille", "quatre-vingt mille")
    if head.endswith("cents mille"):
        head = head.replace("cents mille", "cent mille")
    return head if rest == 0 else head + " " + french_number(rest, feminine)


_EN_ORDINAL_IRREGULAR = {1: "first", 2: "second", 3: "third", 5: "fifth", 8: "eighth",
                         9: "ninth", 12: "twelfth"}


def english_ordinal(n: int) -> str:
    """1 <= n < 100 as an English ordinal in words: 'twenty third', 'thirtieth'."""
    if not 1 <= n < 100:
        raise ValueError(f"ordinal out of range: {n}")
    tens, ones = divmod(n, 10)
    if n >= 20 and ones:
        return _EN_TENS[tens] + " " + english_ordinal(ones)
    if n in _EN_ORDINAL_IRREGULAR:
        return _EN_ORDINAL_IRREGULAR[n]
    word = english_number(n)
    return word[:-1] + "ieth" if word.endswith("y") else word + "th"


def english_year(year: int) -> str:
    """Years read the English way: 'nineteen eighty four', 'twenty twenty three'."""
    high, low = divmod(year, 100)
    if low == 0:
        return english_number(high) + " hundred"
    if low < 10:
        return english_number(high) + " oh " + english_number(low)
    return english_number(high) + " " + english_number(low)


# ---------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str
    fr: str
    fr_pl: str
    feminine: bool


@dataclass(frozen=True)
class Adjective:
    en: str
    fr_m: str
    fr_f: str
    fr_mpl: str
    fr_fpl: str

    def fr(self, feminine: bool, plural: bool) -> str:
        if plural:
            return self.fr_fpl if feminine else self.fr_mpl
        return self.fr_f if feminine else self.fr_m


def _n(en: str, fr: str, gender: str, en_pl: str | None = None, fr_pl: str | None = None) -> Noun:
    return Noun(en, en_pl or en + "s", fr, fr_pl or fr + "s", gender == "f")


def _a(en: str, fr_m: str, fr_f: str | None = None, fr_mpl: str | None = None,
       fr_fpl: str | None = None) -> Adjective:
    fr_f = fr_f or fr_m
    return Adjective(en, fr_m, fr_f, fr_mpl or fr_m + "s", fr_fpl or fr_f + "s")


NOUNS: list[Noun] = [
    _n("apple", "pomme", "f"), _n("book", "livre", "m"), _n("chair", "chaise", "f"),
    _n("table", "table", "f"), _n("car", "voiture", "f"), _n("bicycle", "vélo", "m"),
    _n("letter", "lettre", "f"), _n("key", "clé", "f"), _n("bottle", "bouteille", "f"),
    _n("lamp", "lampe", "f"), _n("door", "porte", "f"), _n("window", "fenêtre", "f"),
    _n("garden", "jardin", "m"), _n("house", "maison", "f"), _n("boat", "bateau", "m",
                                                                fr_pl="bateaux"),
    _n("train", "train", "m"), _n("horse", "cheval", "m", fr_pl="chevaux"),
    _n("dog", "chien", "m"), _n("cat", "chat", "m"), _n("bird", "oiseau", "m", fr_pl="oiseaux"),
    _n("tree", "arbre", "m"), _n("flower", "fleur", "f"), _n("cup", "tasse", "f"),
    _n("plate", "assiette", "f"), _n("knife", "couteau", "m", "knives", "couteaux"),
    _n("shirt", "chemise", "f"), _n("hat", "chapeau", "m", fr_pl="chapeaux"),
    _n("shoe", "chaussure", "f"), _n("box", "boîte", "f", "boxes"),
    _n("picture", "tableau", "m", fr_pl="tableaux"), _n("clock", "horloge", "f"),
    _n("computer", "ordinateur", "m"), _n("phone", "téléphone", "m"),
    _n("newspaper", "journal", "m", fr_pl="journaux"), _n("map", "carte", "f"),
    _n("bag", "sac", "m"), _n("coat", "manteau", "m", fr_pl="manteaux"),
    _n("ticket", "billet", "m"), _n("bridge", "pont", "m"), _n("road", "route", "f"),
    _n("river", "rivière", "f"), _n("mountain", "montagne", "f"), _n("island", "île", "f"),
    _n("cake", "gâteau", "m", fr_pl="gâteaux"), _n("orange", "orange", "f"),
    _n("lemon", "citron", "m"), _n("egg", "œuf", "m"), _n("glass", "verre", "m", "glasses"),
    _n("spoon", "cuillère", "f"), _n("pencil", "crayon", "m"), _n("candle", "bougie", "f"),
    _n("basket", "panier", "m"), _n("blanket", "couverture", "f"),
    _n("mirror", "miroir", "m"), _n("umbrella", "parapluie", "m"),
    _n("guitar", "guitare", "f"), _n("piano", "piano", "m"), _n("camera", "appareil",
                                                               "m"),
    _n("ball", "ballon", "m"), _n("card", "carte", "f"), _n("stone", "pierre", "f"),
    _n("shell", "coquillage", "m"), _n("boot", "botte", "f"), _n("jacket", "veste", "f"),
    _n("envelope", "enveloppe", "f"), _n("sandwich", "sandwich", "m", "sandwiches"),
    _n("potato", "pomme de terre", "f", "potatoes", "pommes de terre"),
    _n("tomato", "tomate", "f", "tomatoes"), _n("carrot", "carotte", "f"),
    _n("onion", "oignon", "m"), _n("banana", "banane", "f"), _n("pear", "poire", "f"),
    _n("strawberry", "fraise", "f", "strawberries"), _n("sheep", "mouton", "m", "sheep"),
    _n("rabbit", "lapin", "m"), _n("duck", "canard", "m"), _n("cow", "vache", "f"),
    _n("fish", "poisson", "m", "fish"), _n("painting", "peinture", "f"),
    _n("ring", "bague", "f"), _n("watch", "montre", "f", "watches"),
    _n("towel", "serviette", "f"), _n("pillow", "oreiller", "m"), _n("desk", "bureau", "m",
                                                                     fr_pl="bureaux"),
    _n("bench", "banc", "m", "benches"), _n("tent", "tente", "f"),
    _n("helmet", "casque", "m"), _n("drawer", "tiroir", "m"), _n("wallet", "portefeuille",
                                                                 "m"),
]

ADJECTIVES: list[Adjective] = [
    _a("red", "rouge"), _a("blue", "bleu", "bleue"), _a("green", "vert", "verte"),
    _a("black", "noir", "noire"), _a("white", "blanc", "blanche"), _a("yellow", "jaune"),
    _a("grey", "gris", "grise", "gris"), _a("heavy", "lourd", "lourde"),
    _a("fragile", "fragile"), _a("modern", "moderne"), _a("empty", "vide"),
    _a("clean", "propre"), _a("strange", "étrange"), _a("famous", "célèbre"),
    _a("round", "rond", "ronde"), _a("square", "carré", "carrée"),
    _a("broken", "cassé", "cassée"), _a("wooden", "en bois", "en bois", "en bois", "en bois"),
    _a("expensive", "cher", "chère"), _a("quiet", "calme"), _a("wet", "mouillé", "mouillée"),
    _a("dirty", "sale"), _a("solid", "solide"), _a("shiny", "brillant", "brillante"),
    _a("warm", "chaud", "chaude"), _a("cold", "froid", "froide"),
    _a("delicious", "délicieux", "délicieuse", "délicieux"), _a("purple", "violet",
                                                                "violette"),
    _a("pink", "rose"), _a("brown", "marron", "marron", "marron", "marron"),
    _a("Italian", "italien", "italienne"), _a("Spanish", "espagnol", "espagnole"),
    _a("German", "allemand", "allemande"), _a("Japanese", "japonais", "japonaise",
                                              "japonais"),
    _a("useful", "utile"), _a("enormous", "énorme"), _a("fast", "rapide"),
]

# (english, french, feminine)
NAMES: list[tuple[str, bool]] = [
    ("Alice", True), ("Marie", True), ("Sophie", True), ("Julie", True), ("Emma", True),
    ("Claire", True), ("Laura", True), ("Anna", True), ("Louise", True), ("Camille", True),
    ("Nina", True), ("Sarah", True), ("Chloé", True), ("Lucie", True), ("Hélène", True),
    ("Isabelle", True), ("Margaret", True), ("Olivia", True), ("Rachel", True), ("Fatima", True),
    ("Paul", False), ("Thomas", False), ("Pierre", False), ("Louis", False), ("Martin", False),
    ("David", False), ("Hugo", False), ("Lucas", False), ("Daniel", False), ("Victor", False),
    ("Simon", False), ("Julien", False), ("Robert", False), ("Antoine", False), ("Omar", False),
    ("Henri", False), ("Oscar", False), ("Arthur", False), ("Samuel", False), ("Nathan", False),
    ("Gabriel", False), ("Marc", False), ("Vincent", False), ("Léon", False), ("Karim", False),
]

# (english, french)
CITIES: list[tuple[str, str]] = [
    ("Paris", "Paris"), ("London", "Londres"), ("Rome", "Rome"), ("Berlin", "Berlin"),
    ("Madrid", "Madrid"), ("Lisbon", "Lisbonne"), ("Vienna", "Vienne"),
    ("Brussels", "Bruxelles"), ("Geneva", "Genève"), ("Montreal", "Montréal"),
    ("Venice", "Venise"), ("Athens", "Athènes"), ("Moscow", "Moscou"), ("Tokyo", "Tokyo"),
    ("Dublin", "Dublin"), ("Oslo", "Oslo"), ("Prague", "Prague"), ("Warsaw", "Varsovie"),
    ("Edinburgh", "Édimbourg"), ("Lyon", "Lyon"), ("Marseille", "Marseille"),
    ("Toronto", "Toronto"), ("Chicago", "Chicago"), ("Boston", "Boston"),
    ("Sydney", "Sydney"), ("Stockholm", "Stockholm"), ("Copenhagen", "Copenhague"),
    ("Budapest", "Budapest"), ("Florence", "Florence"), ("Naples", "Naples"),
    ("Bordeaux", "Bordeaux"), ("Toulouse", "Toulouse"), ("Nice", "Nice"), ("Quebec", "Québec"),
]

WEEKDAYS = [("Monday", "lundi"), ("Tuesday", "mardi"), ("Wednesday", "mercredi"),
            ("Thursday", "jeudi"), ("Friday", "vendredi"), ("Saturday", "samedi"),
            ("Sunday", "dimanche")]

MONTHS = [("January", "janvier"), ("February", "février"), ("March", "mars"),
          ("April", "avril"), ("May", "mai"), ("June", "juin"), ("July", "juillet"),
          ("August", "août"), ("September", "septembre"), ("October", "octobre"),
          ("November", "novembre"), ("December", "décembre")]

# transitive verbs: (english past, english infinitive, french participle, french infinitive)
VERBS = [
    ("bought", "buy", "acheté", "acheter"), ("found", "find", "trouvé", "trouver"),
    ("opened", "open", "ouvert", "ouvrir"), ("cleaned", "clean", "nettoyé", "nettoyer"),
    ("painted", "paint", "peint", "peindre"), ("sold", "sell", "vendu", "vendre"),
    ("repaired", "repair", "réparé", "réparer"), ("lost", "lose", "perdu", "perdre"),
    ("washed", "wash", "lavé", "laver"), ("moved", "move", "déplacé", "déplacer"),
    ("borrowed", "borrow", "emprunté", "emprunter"), ("hid", "hide", "caché", "cacher"),
    ("carried", "carry", "porté", "porter"), ("forgot", "forget", "oublié", "oublier"),
    ("chose", "choose", "choisi", "choisir"), ("watched", "watch", "regardé", "regarder"),
    ("brought", "bring", "apporté", "apporter"), ("kept", "keep", "gardé", "garder"),
    ("drew", "draw", "dessiné", "dessiner"), ("counted", "count", "compté", "compter"),
]

# (english relative noun, french noun, feminine)
RELATIVES = [("brother", "frère", False), ("sister", "sœur", True), ("mother", "mère", True),
             ("father", "père", False), ("uncle", "oncle", False), ("aunt", "tante", True),
             ("grandmother", "grand-mère", True), ("grandfather", "grand-père", False),
             ("son", "fils", False), ("daughter", "fille", True)]

# prepositions of place: (english, french head taking "de" or None for a bare article)
PLACES = [("under", "sous", False), ("on", "sur", False), ("behind", "derrière", False),
          ("in front of", "devant", False), ("next to", "à côté", True),
          ("near", "près", True), ("inside", "dans", False)]

_VOWELS = set("aeiouyhàâéèêëîïôœûùAEIOUYHÉÈÊÎÔ")


def _elides(word: str) -> bool:
    # h is treated as mute for our lexicon (no aspirated-h nouns are used)
    return word[0] in _VOWELS


def fr_definite(noun: Noun, plural: bool = False) -> str:
    """'le livre', 'la chaise', "l'arbre", 'les livres'."""
    if plural:
        return "les " + noun.fr_pl
    if _elides(noun.fr):
        return "l'" + noun.fr
    return ("la " if noun.feminine else "le ") + noun.fr


def fr_de_definite(noun: Noun) -> str:
    """'de' + definite article with contraction: 'du livre', 'de la chaise', "de l'arbre"."""
    if _elides(noun.fr):
        return "de l'" + noun.fr
    return ("de la " if noun.feminine else "du ") + noun.fr


def fr_possessive(fr_noun: str, feminine: bool) -> str:
    """'mon frère', 'ma sœur', 'mon oncle' (mon before a vowel even when feminine)."""
    if feminine and not _elides(fr_noun):
        return "ma " + fr_noun
    return "mon " + fr_noun


def _de(word: str) -> str:
    """'de pommes', "d'horloges"."""
    return ("d'" if _elides(word) else "de ") + word


def fr_indefinite(noun: Noun) -> str:
    return ("une " if noun.feminine else "un ") + noun.fr


def en_indefinite(word: str) -> str:
    """'a red book', 'an empty box', 'a useful map'."""
    vowel_sound = word[0].lower() in "aeiou" and not word.lower().startswith(("use", "uni"))
    return ("an " if vowel_sound else "a ") + word


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def english_time(hour: int, minute: int) -> str:
    """hour 1..12, minute in {0, 15, 30, 45, other}."""
    h = english_number(hour)
    if minute == 0:
        return h + " o'clock"
    if minute == 15:
        return "a quarter past " + h
    if minute == 30:
        return "half past " + h
    return h + " " + english_number(minute)


def french_time(hour: int, minute: int) -> str:
    h = french_number(hour, feminine=True) + (" heure" if hour == 1 else " heures")
    if minute == 0:
        return h
    if minute == 15:
        return h + " et quart"
    if minute == 30:
        return h + " et demie"
    return h + " " + french_number(minute, feminine=True)


# ---------------------------------------------------------------- sentence shapes


class _Pick:
    """Random choices from the lexicon with one numpy generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def one(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def two(self, items: list) -> tuple:
        i, j = self.rng.choice(len(items), size=2, replace=False)
        return items[int(i)], items[int(j)]

    def count(self) -> int:
        kind = self.rng.random()
        if kind < 0.5:
            return int(self.rng.integers(2, 20))
        if kind < 0.85:
            return int(self.rng.integers(20, 100))
        return int(self.rng.integers(100, 1000))

    def time(self) -> tuple[int, int]:
        minute = self.one([0, 0, 15, 30, 45, int(self.rng.integers(1, 60))])
        return int(self.rng.integers(1, 13)), minute


def _possession(p: _Pick) -> tuple[str, str]:
    (name, _), noun, n = p.one(NAMES), p.one(NOUNS), p.count()
    if p.rng.random() < 0.5:
        adj = p.one(ADJECTIVES)
        en = f"{name} has {english_number(n)} {adj.en} {noun.en_pl}."
        fr = f"{name} a {french_number(n, noun.feminine)} {noun.fr_pl} {adj.fr(noun.feminine, True)}."
    else:
        en = f"{name} has {english_number(n)} {noun.en_pl}."
        fr = f"{name} a {french_number(n, noun.feminine)} {noun.fr_pl}."
    return en, fr


def _location(p: _Pick) -> tuple[str, str]:
    a, b = p.two(NOUNS)
    prep_en, prep_fr, takes_de = p.one(PLACES)
    target = f"{prep_fr} {fr_de_definite(b) if takes_de else fr_definite(b)}"
    adj = p.one(ADJECTIVES)
    en = f"The {adj.en} {a.en} is {prep_en} the {b.en}."
    fr = _cap(f"{fr_definite(a)} {adj.fr(a.feminine, False)} est {target}.")
    return en, fr


def _timed_action(p: _Pick) -> tuple[str, str]:
    (name, _), noun = p.one(NAMES), p.one(NOUNS)
    past_en, _, part_fr, _ = p.one(VERBS)
    hour, minute = p.time()
    en = f"At {english_time(hour, minute)}, {name} {past_en} the {noun.en}."
    fr = f"À {french_time(hour, minute)}, {name} a {part_fr} {fr_definite(noun)}."
    return en, fr


def _lives_in(p: _Pick) -> tuple[str, str]:
    (name, _), (city_en, city_fr) = p.one(NAMES), p.one(CITIES)
    if p.rng.random() < 0.5:
        return f"{name} lives in {city_en}.", f"{name} habite à {city_fr}."
    (name2, _) = p.one(NAMES)
    return (f"{name} and {name2} work in {city_en}.", f"{name} et {name2} travaillent à {city_fr}.")


def _plans(p: _Pick) -> tuple[str, str]:
    (a, _), (b, _) = p.two(NAMES)
    day_en, day_fr = p.one(WEEKDAYS)
    _, inf_en, _, inf_fr = p.one(VERBS)
    noun, n = p.one(NOUNS), p.count()
    en = f"On {day_en}, {a} and {b} are going to {inf_en} {english_number(n)} {noun.en_pl}."
    fr = _cap(f"{day_fr}, {a} et {b} vont {inf_fr} {french_number(n, noun.feminine)} {noun.fr_pl}.")
    return en, fr


def _question(p: _Pick) -> tuple[str, str]:
    kind = p.rng.random()
    if kind < 0.35:
        noun, adj = p.one(NOUNS), p.one(ADJECTIVES)
        return (f"Where is the {adj.en} {noun.en}?",
                f"Où est {fr_definite(noun)} {adj.fr(noun.feminine, False)}?")
    if kind < 0.7:
        noun, (name, fem) = p.one(NOUNS), p.one(NAMES)
        pronoun = "elle" if fem else "il"
        return (f"How many {noun.en_pl} does {name} have?",
                f"Combien {_de(noun.fr_pl)} {name} a-t-{pronoun}?")
    (city_en, city_fr) = p.one(CITIES)
    return (f"Is the train to {city_en} late?", f"Est-ce que le train pour {city_fr} est en retard?")


def _age(p: _Pick) -> tuple[str, str]:
    (name, _), age = p.one(NAMES), int(p.rng.integers(2, 100))
    if p.rng.random() < 0.5:
        return (f"{name} is {english_number(age)} years old.", f"{name} a {french_number(age)} ans.")
    rel_en, rel_fr, fem = p.one(RELATIVES)
    return (f"My {rel_en} is {english_number(age)} years old.",
            _cap(f"{fr_possessive(rel_fr, fem)} a {french_number(age)} ans."))


def _price(p: _Pick) -> tuple[str, str]:
    noun, euros = p.one(NOUNS), p.count()
    adj = p.one(ADJECTIVES)
    en = f"This {adj.en} {noun.en} costs {english_number(euros)} euros."
    demonstrative = "Cette" if noun.feminine else ("Cet" if _elides(noun.fr) else "Ce")
    fr = f"{demonstrative} {noun.fr} {adj.fr(noun.feminine, False)} coûte {french_number(euros)} euros."
    return en, fr


def _weather(p: _Pick) -> tuple[str, str]:
    (city_en, city_fr), t = p.one(CITIES), int(p.rng.integers(2, 40))
    day_en, day_fr = p.one([("today", "aujourd'hui"), ("this morning", "ce matin"),
                            ("tonight", "ce soir")])
    return (f"It is {english_number(t)} degrees in {city_en} {day_en}.",
            f"Il fait {french_number(t)} degrés à {city_fr} {day_fr}.")


def _likes(p: _Pick) -> tuple[str, str]:
    rel_en, rel_fr, fem = p.one(RELATIVES)
    a, b = p.two(NOUNS)
    neg = p.rng.random() < 0.4
    if neg:
        return (f"My {rel_en} does not like {a.en_pl}.",
                _cap(f"{fr_possessive(rel_fr, fem)} n'aime pas les {a.fr_pl}."))
    return (f"My {rel_en} likes {a.en_pl} and {b.en_pl}.",
            _cap(f"{fr_possessive(rel_fr, fem)} aime les {a.fr_pl} et les {b.fr_pl}."))


def _travel(p: _Pick) -> tuple[str, str]:
    (name, _), (c1_en, c1_fr), month = p.one(NAMES), p.one(CITIES), p.one(MONTHS)
    year = int(p.rng.integers(1950, 2030))
    if 2000 <= year < 2010:
        year += 20
    kind = p.rng.random()
    if kind < 0.5:
        return (f"In {english_year(year)}, {name} visited {c1_en}.",
                f"En {french_number(year)}, {name} a visité {c1_fr}.")
    day = int(p.rng.integers(2, 29))
    return (f"The train to {c1_en} leaves on {month[0]} {english_ordinal(day)}.",
            f"Le train pour {c1_fr} part le {french_number(day)} {month[1]}.")


def _gift(p: _Pick) -> tuple[str, str]:
    (a, _), (b, _) = p.two(NAMES)
    noun, adj = p.one(NOUNS), p.one(ADJECTIVES)
    return (f"{a} gave {en_indefinite(adj.en + ' ' + noun.en)} to {b}.",
            f"{a} a donné {fr_indefinite(noun)} {adj.fr(noun.feminine, False)} à {b}.")


def _sequence(p: _Pick) -> tuple[str, str]:
    (name, _) = p.one(NAMES)
    a, b = p.two(NOUNS)
    (v1_en, _, v1_fr, _), (v2_en, _, v2_fr, _) = p.two(VERBS)
    return (f"First {name} {v1_en} the {a.en}, then {v2_en} the {b.en}.",
            f"D'abord {name} a {v1_fr} {fr_definite(a)}, puis a {v2_fr} {fr_definite(b)}.")


SHAPES = [_possession, _location, _timed_action, _lives_in, _plans, _question, _age, _price,
          _weather, _likes, _travel, _gift, _sequence]


def ascii_letters(text: str) -> str:
    """'Chloé' -> 'Chloe': English text is written without accents (flite reads ASCII)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def sentence_pair(rng: np.random.Generator) -> tuple[str, str]:
    """One (English, French) sentence pair; the French is the exact translation."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    en, fr = shape(_Pick(rng))
    return ascii_letters(en), fr


def sentences(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    return [sentence_pair(rng) for _ in range(count)]


def sentence(rng: np.random.Generator, lang: str) -> str:
    """One sentence in `lang` ('en' or 'fr')."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: expected one of {', '.join(LANGS)}")
    en, fr = sentence_pair(rng)
    return en if lang == "en" else fr
