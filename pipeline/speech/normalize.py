"""Text normalization for speech: write out what a voice should say.

    >>> normalize("Dr. Smith paid $5.50 on 2026-11-23")
    'Doctor Smith paid five dollars and fifty cents on November twenty-third, twenty twenty-six'
    >>> normalize("Am 23.11.2026 um 14:30 Uhr", "de")
    'Am dreiundzwanzigsten November zweitausendsechsundzwanzig um vierzehn Uhr dreißig'

`normalize(text, language)` runs a fixed pipeline of small regex passes, each one a
function below with its own examples, in this order:

    LaTeX → scientific notation → abbreviations → dates → times → phone numbers → ranges →
    powers → currencies → percentages → units → math → ordinals → years → numbers (decimals,
    negatives, integers) → tidy

The order matters: a date or a phone number must be recognised before its digits are read as
numbers, a unit before its number, and so on. Number words come from num2words (cardinal,
ordinal and year forms); the phrases around them (currency and unit names, math words, month
names) are the small per-language tables below. English is complete; German and French cover
the same categories. Everything is compiled at import; the number words are cached.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from num2words import num2words

__all__ = ["normalize", "resolve_language", "SUPPORTED_LANGUAGES"]

SUPPORTED_LANGUAGES = ("en", "de", "fr")


def resolve_language(language: str) -> str:
    """The base language code normalize() uses: "en-US" → "en", "de_DE" → "de", "FR" → "fr".

    Raises ValueError (naming the supported languages) for anything else.
    """
    base = re.split(r"[-_]", str(language or "").strip().lower(), maxsplit=1)[0]
    if base not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"text normalization does not support language {language!r}; "
            f"supported: {', '.join(SUPPORTED_LANGUAGES)} (regional forms such as en-US or de-DE work too)"
        )
    return base


# --------------------------------------------------------------------------------------------
# Word tables
# --------------------------------------------------------------------------------------------

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "minus": "minus", "plus": "plus", "times": "times", "divided_by": "divided by",
        "equals": "equals", "ne": "is not equal to", "lt": "is less than", "gt": "is greater than",
        "le": "is less than or equal to", "ge": "is greater than or equal to",
        "approx": "is approximately", "pm": "plus or minus", "mp": "minus or plus",
        "power": "to the power of", "squared": "squared", "cubed": "cubed", "over": "over",
        "sub": "sub", "sqrt": "the square root of", "cbrt": "the cube root of",
        "root_n": "the {n} root of", "sum": "the sum", "prod": "the product", "int": "the integral",
        "from": "from", "to": "to", "infinity": "infinity", "tends_to": "tends to",
        "lim": "the limit", "factorial": "factorial", "dots": "and so on", "in": "in",
        "partial": "partial", "sin": "sine", "cos": "cosine", "tan": "tangent", "log": "log",
        "ln": "natural log", "exp": "exp", "capital": "capital {}",
        "point": "point", "percent": "percent", "permille": "per mille", "and": "and",
        "number": "number", "oh": "oh", "oclock": "o'clock", "hundred_hours": "hundred",
        "midnight": "midnight", "second": "second", "seconds": "seconds",
    },
    "de": {
        "minus": "minus", "plus": "plus", "times": "mal", "divided_by": "geteilt durch",
        "equals": "gleich", "ne": "ungleich", "lt": "kleiner als", "gt": "größer als",
        "le": "kleiner oder gleich", "ge": "größer oder gleich", "approx": "ungefähr gleich",
        "pm": "plus minus", "mp": "minus plus", "power": "hoch", "squared": "Quadrat",
        "cubed": "hoch drei", "over": "durch", "sub": "Index", "sqrt": "die Wurzel aus",
        "cbrt": "die dritte Wurzel aus", "root_n": "die {n} Wurzel aus", "sum": "die Summe",
        "prod": "das Produkt", "int": "das Integral", "from": "von", "to": "bis",
        "infinity": "unendlich", "tends_to": "gegen", "lim": "der Grenzwert",
        "factorial": "Fakultät", "dots": "und so weiter", "in": "in", "partial": "partiell",
        "sin": "Sinus", "cos": "Kosinus", "tan": "Tangens", "log": "Logarithmus",
        "ln": "natürlicher Logarithmus", "exp": "Exponentialfunktion", "capital": "großes {}",
        "point": "Komma", "percent": "Prozent", "permille": "Promille", "and": "und",
        "number": "Nummer", "uhr": "Uhr", "second": "Sekunde", "seconds": "Sekunden",
    },
    "fr": {
        "minus": "moins", "plus": "plus", "times": "fois", "divided_by": "divisé par",
        "equals": "égale", "ne": "différent de", "lt": "inférieur à", "gt": "supérieur à",
        "le": "inférieur ou égal à", "ge": "supérieur ou égal à", "approx": "environ égal à",
        "pm": "plus ou moins", "mp": "moins ou plus", "power": "puissance", "squared": "au carré",
        "cubed": "au cube", "over": "sur", "sub": "indice", "sqrt": "la racine carrée de",
        "cbrt": "la racine cubique de", "root_n": "la racine {n} de", "sum": "la somme",
        "prod": "le produit", "int": "l'intégrale", "from": "de", "to": "à",
        "infinity": "l'infini", "tends_to": "tend vers", "lim": "la limite",
        "factorial": "factorielle", "dots": "et cetera", "in": "dans", "partial": "d rond",
        "sin": "sinus", "cos": "cosinus", "tan": "tangente", "log": "logarithme",
        "ln": "logarithme népérien", "exp": "exponentielle", "capital": "{} majuscule",
        "point": "virgule", "percent": "pour cent", "permille": "pour mille", "and": "et",
        "number": "numéro", "heure": "heure", "heures": "heures", "second": "seconde",
        "seconds": "secondes",
    },
}

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
           "octobre", "novembre", "décembre"],
}
# Written forms that name a month (index 1..12), beyond the full names.
_MONTH_ALIASES = {
    "en": {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "Jun": 6, "Jul": 7, "Aug": 8, "Sep": 9,
           "Sept": 9, "Oct": 10, "Nov": 11, "Dec": 12},
    "de": {"Jänner": 1},
    "fr": {"fevrier": 2, "aout": 8, "decembre": 12},
}

_GREEK = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
          "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
          "chi", "psi", "omega"]
_GREEK_NAMES = {
    "en": {g: g for g in _GREEK},
    "de": {g: g.capitalize() for g in _GREEK} | {"iota": "Jota", "mu": "My", "nu": "Ny",
                                                 "omicron": "Omikron", "upsilon": "Ypsilon"},
    "fr": {g: g for g in _GREEK} | {"beta": "bêta", "zeta": "zêta", "eta": "êta", "theta": "thêta",
                                     "mu": "mu", "rho": "rhô", "chi": "khi", "omega": "oméga"},
}
_GREEK_UNICODE = dict(zip("αβγδεζηθικλμνξοπρστυφχψω", _GREEK))
_GREEK_UNICODE |= {"ϵ": "epsilon", "ϑ": "theta", "ϕ": "phi", "ς": "sigma"}
_GREEK_UNICODE_CAPITAL = {"Γ": "gamma", "Δ": "delta", "Θ": "theta", "Λ": "lambda", "Ξ": "xi",
                          "Π": "pi", "Σ": "sigma", "Φ": "phi", "Ψ": "psi", "Ω": "omega"}

# Currency: code → symbols written before/after the amount.
_CURRENCY_SYMBOLS = {"US$": "USD", "$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR"}
_CURRENCY_CODES = ("USD", "EUR", "GBP", "JPY", "CHF", "INR")
# code → (major singular, major plural, major gender, minor singular, minor plural, minor gender)
# (gender "f" matters for French "une"; German "ein" is the same for m and n)
_CURRENCY_NAMES = {
    "en": {
        "USD": ("dollar", "dollars", "m", "cent", "cents", "m"),
        "EUR": ("euro", "euros", "m", "cent", "cents", "m"),
        "GBP": ("pound", "pounds", "m", "penny", "pence", "m"),
        "JPY": ("yen", "yen", "m", None, None, None),
        "CHF": ("Swiss franc", "Swiss francs", "m", "centime", "centimes", "m"),
        "INR": ("rupee", "rupees", "f", "paisa", "paise", "m"),
    },
    "de": {
        "USD": ("Dollar", "Dollar", "m", "Cent", "Cent", "m"),
        "EUR": ("Euro", "Euro", "m", "Cent", "Cent", "m"),
        "GBP": ("Pfund", "Pfund", "n", "Penny", "Pence", "m"),
        "JPY": ("Yen", "Yen", "m", None, None, None),
        "CHF": ("Franken", "Franken", "m", "Rappen", "Rappen", "m"),
        "INR": ("Rupie", "Rupien", "f", "Paisa", "Paise", "m"),
    },
    "fr": {
        "USD": ("dollar", "dollars", "m", "cent", "cents", "m"),
        "EUR": ("euro", "euros", "m", "centime", "centimes", "m"),
        "GBP": ("livre", "livres", "f", "penny", "pence", "m"),
        "JPY": ("yen", "yens", "m", None, None, None),
        "CHF": ("franc suisse", "francs suisses", "m", "centime", "centimes", "m"),
        "INR": ("roupie", "roupies", "f", "paisa", "paise", "m"),
    },
}
# Scale words allowed between an amount and its currency ("$5 million"): written → (sing, plural)
_SCALES = {
    "en": {"thousand": ("thousand", "thousand"), "million": ("million", "million"),
           "billion": ("billion", "billion"), "trillion": ("trillion", "trillion")},
    "de": {"Tausend": ("tausend", "tausend"), "Million": ("Million", "Millionen"),
           "Millionen": ("Million", "Millionen"), "Mio.": ("Million", "Millionen"),
           "Milliarde": ("Milliarde", "Milliarden"), "Milliarden": ("Milliarde", "Milliarden"),
           "Mrd.": ("Milliarde", "Milliarden"), "Billion": ("Billion", "Billionen"),
           "Billionen": ("Billion", "Billionen")},
    "fr": {"mille": ("mille", "mille"), "million": ("million", "millions"),
           "millions": ("million", "millions"), "milliard": ("milliard", "milliards"),
           "milliards": ("milliard", "milliards")},
}

# Units: symbol → {language: (singular, plural, gender)}. Written after a number only.
_U = {
    "mm": ("millimeter", "Millimeter", "millimètre"),
    "cm": ("centimeter", "Zentimeter", "centimètre"),
    "m": ("meter", "Meter", "mètre"),
    "km": ("kilometer", "Kilometer", "kilomètre"),
    "µm": ("micrometer", "Mikrometer", "micromètre"),
    "nm": ("nanometer", "Nanometer", "nanomètre"),
    "mg": ("milligram", "Milligramm", "milligramme"),
    "g": ("gram", "Gramm", "gramme"),
    "kg": ("kilogram", "Kilogramm", "kilogramme"),
    "ml": ("milliliter", "Milliliter", "millilitre"),
    "mL": ("milliliter", "Milliliter", "millilitre"),
    "l": ("liter", "Liter", "litre"),
    "L": ("liter", "Liter", "litre"),
    "Hz": ("hertz", "Hertz", "hertz"),
    "kHz": ("kilohertz", "Kilohertz", "kilohertz"),
    "MHz": ("megahertz", "Megahertz", "mégahertz"),
    "GHz": ("gigahertz", "Gigahertz", "gigahertz"),
    "KB": ("kilobyte", "Kilobyte", "kilooctet"),
    "kB": ("kilobyte", "Kilobyte", "kilooctet"),
    "MB": ("megabyte", "Megabyte", "mégaoctet"),
    "GB": ("gigabyte", "Gigabyte", "gigaoctet"),
    "TB": ("terabyte", "Terabyte", "téraoctet"),
    "KiB": ("kibibyte", "Kibibyte", "kibioctet"),
    "MiB": ("mebibyte", "Mebibyte", "mébioctet"),
    "GiB": ("gibibyte", "Gibibyte", "gibioctet"),
    "W": ("watt", "Watt", "watt"),
    "kW": ("kilowatt", "Kilowatt", "kilowatt"),
    "MW": ("megawatt", "Megawatt", "mégawatt"),
    "V": ("volt", "Volt", "volt"),
    "°": ("degree", "Grad", "degré"),
    "°C": ("degree Celsius", "Grad Celsius", "degré Celsius"),
    "℃": ("degree Celsius", "Grad Celsius", "degré Celsius"),
    "°F": ("degree Fahrenheit", "Grad Fahrenheit", "degré Fahrenheit"),
    "ft": ("foot", "Fuß", "pied"),
    "mi": ("mile", "Meile", "mile"),
    "lb": ("pound", "Pfund", "livre"),
    "lbs": ("pound", "Pfund", "livre"),
    "oz": ("ounce", "Unze", "once"),
    "m²": ("square meter", "Quadratmeter", "mètre carré"),
    "km²": ("square kilometer", "Quadratkilometer", "kilomètre carré"),
    "cm²": ("square centimeter", "Quadratzentimeter", "centimètre carré"),
    "m³": ("cubic meter", "Kubikmeter", "mètre cube"),
}
# Irregular plurals / genders per language: symbol → (singular, plural, gender)
_U_IRREGULAR = {
    "en": {"ft": ("foot", "feet", "m"), "Hz": ("hertz", "hertz", "m"),
           "kHz": ("kilohertz", "kilohertz", "m"), "MHz": ("megahertz", "megahertz", "m"),
           "GHz": ("gigahertz", "gigahertz", "m"),
           "°C": ("degree Celsius", "degrees Celsius", "m"), "℃": ("degree Celsius", "degrees Celsius", "m"),
           "°F": ("degree Fahrenheit", "degrees Fahrenheit", "m"),
           "m²": ("square meter", "square meters", "m"), "km²": ("square kilometer", "square kilometers", "m"),
           "cm²": ("square centimeter", "square centimeters", "m"), "m³": ("cubic meter", "cubic meters", "m"),
           "km/h": ("kilometer per hour", "kilometers per hour", "m"),
           "mph": ("mile per hour", "miles per hour", "m"),
           "m/s": ("meter per second", "meters per second", "m"),
           "km/s": ("kilometer per second", "kilometers per second", "m"),
           "kWh": ("kilowatt hour", "kilowatt hours", "m"),
           "Mbps": ("megabit per second", "megabits per second", "m"),
           "Gbps": ("gigabit per second", "gigabits per second", "m"),
           "Mbit/s": ("megabit per second", "megabits per second", "m"),
           "s": ("second", "seconds", "m"), "sec": ("second", "seconds", "m"),
           "ms": ("millisecond", "milliseconds", "m"), "min": ("minute", "minutes", "m"),
           "h": ("hour", "hours", "m"), "hr": ("hour", "hours", "m"), "hrs": ("hour", "hours", "m")},
    "de": {"mi": ("Meile", "Meilen", "f"), "oz": ("Unze", "Unzen", "f"),
           "lb": ("Pfund", "Pfund", "n"), "lbs": ("Pfund", "Pfund", "n"),
           "ft": ("Fuß", "Fuß", "m"),
           "km/h": ("Kilometer pro Stunde", "Kilometer pro Stunde", "m"),
           "mph": ("Meile pro Stunde", "Meilen pro Stunde", "f"),
           "m/s": ("Meter pro Sekunde", "Meter pro Sekunde", "m"),
           "km/s": ("Kilometer pro Sekunde", "Kilometer pro Sekunde", "m"),
           "kWh": ("Kilowattstunde", "Kilowattstunden", "f"),
           "Mbps": ("Megabit pro Sekunde", "Megabit pro Sekunde", "n"),
           "Gbps": ("Gigabit pro Sekunde", "Gigabit pro Sekunde", "n"),
           "Mbit/s": ("Megabit pro Sekunde", "Megabit pro Sekunde", "n"),
           "s": ("Sekunde", "Sekunden", "f"), "Sek.": ("Sekunde", "Sekunden", "f"),
           "ms": ("Millisekunde", "Millisekunden", "f"), "min": ("Minute", "Minuten", "f"),
           "Min.": ("Minute", "Minuten", "f"), "h": ("Stunde", "Stunden", "f"),
           "Std.": ("Stunde", "Stunden", "f")},
    "fr": {"lb": ("livre", "livres", "f"), "lbs": ("livre", "livres", "f"),
           "oz": ("once", "onces", "f"),
           "°C": ("degré Celsius", "degrés Celsius", "m"), "℃": ("degré Celsius", "degrés Celsius", "m"),
           "°F": ("degré Fahrenheit", "degrés Fahrenheit", "m"),
           "m²": ("mètre carré", "mètres carrés", "m"), "km²": ("kilomètre carré", "kilomètres carrés", "m"),
           "cm²": ("centimètre carré", "centimètres carrés", "m"), "m³": ("mètre cube", "mètres cubes", "m"),
           "km/h": ("kilomètre par heure", "kilomètres par heure", "m"),
           "mph": ("mile par heure", "miles par heure", "m"),
           "m/s": ("mètre par seconde", "mètres par seconde", "m"),
           "km/s": ("kilomètre par seconde", "kilomètres par seconde", "m"),
           "kWh": ("kilowattheure", "kilowattheures", "m"),
           "Mbps": ("mégabit par seconde", "mégabits par seconde", "m"),
           "Gbps": ("gigabit par seconde", "gigabits par seconde", "m"),
           "Mbit/s": ("mégabit par seconde", "mégabits par seconde", "m"),
           "s": ("seconde", "secondes", "f"), "ms": ("milliseconde", "millisecondes", "f"),
           "min": ("minute", "minutes", "f"), "h": ("heure", "heures", "f"),
           "Ko": ("kilooctet", "kilooctets", "m"), "Mo": ("mégaoctet", "mégaoctets", "m"),
           "Go": ("gigaoctet", "gigaoctets", "m"), "To": ("téraoctet", "téraoctets", "m")},
}


def _build_units() -> dict[str, dict[str, tuple[str, str, str]]]:
    """symbol → (singular, plural, gender) for every language."""
    units: dict[str, dict[str, tuple[str, str, str]]] = {}
    for lang, idx in (("en", 0), ("de", 1), ("fr", 2)):
        table: dict[str, tuple[str, str, str]] = {}
        for symbol, names in _U.items():
            sing = names[idx]
            if lang == "en":
                plural = sing if sing.endswith("hertz") else sing + "s"
            elif lang == "de":
                plural = sing  # Meter, Gramm, Grad, Watt … stay the same
            else:
                plural = sing if sing.endswith(("hertz", "s")) else sing + "s"
            gender = "f" if (lang == "fr" and sing in ("livre", "once")) else "m"
            table[symbol] = (sing, plural, gender)
        for symbol, forms in _U_IRREGULAR[lang].items():
            table[symbol] = forms
        units[lang] = table
    return units


UNITS = _build_units()

ABBREVIATIONS = {
    # (written form, spoken form, kind): kind "title" only before a capitalised name, "number"
    # only before a digit, "word" keeps a sentence-ending period when the next word is capitalised or text ends.
    "en": [
        ("Dr.", "Doctor", "title"), ("Mr.", "Mister", "title"), ("Mrs.", "Missus", "title"),
        ("Ms.", "Miz", "title"), ("Prof.", "Professor", "title"), ("Jr.", "Junior", "word"),
        ("Sr.", "Senior", "word"), ("e.g.", "for example", "word"),
        ("e. g.", "for example", "word"), ("i.e.", "that is", "word"), ("i. e.", "that is", "word"),
        ("etc.", "et cetera", "word"), ("vs.", "versus", "word"), ("vs", "versus", "word"),
        ("approx.", "approximately", "word"), ("Fig.", "figure", "word"),
        ("No.", "number", "number"), ("no.", "number", "number"), ("#", "number", "number"),
    ],
    "de": [
        ("Dr.", "Doktor", "title"), ("Prof.", "Professor", "title"), ("Hr.", "Herr", "title"),
        ("Fr.", "Frau", "title"), ("z.B.", "zum Beispiel", "word"), ("z. B.", "zum Beispiel", "word"),
        ("d.h.", "das heißt", "word"), ("d. h.", "das heißt", "word"),
        ("u.a.", "unter anderem", "word"), ("u. a.", "unter anderem", "word"),
        ("usw.", "und so weiter", "word"), ("bzw.", "beziehungsweise", "word"),
        ("ca.", "circa", "word"), ("vgl.", "vergleiche", "word"), ("evtl.", "eventuell", "word"),
        ("inkl.", "inklusive", "word"), ("vs.", "versus", "word"), ("Nr.", "Nummer", "number"),
        ("#", "Nummer", "number"),
    ],
    "fr": [
        ("M.", "Monsieur", "title"), ("MM.", "Messieurs", "title"), ("Mme", "Madame", "title"),
        ("Mlle", "Mademoiselle", "title"), ("Dr", "Docteur", "title"), ("Dr.", "Docteur", "title"),
        ("Pr", "Professeur", "title"), ("etc.", "et cetera", "word"),
        ("p. ex.", "par exemple", "word"), ("p.ex.", "par exemple", "word"),
        ("c.-à-d.", "c'est-à-dire", "word"), ("c-à-d", "c'est-à-dire", "word"),
        ("env.", "environ", "word"), ("vs.", "contre", "word"), ("vs", "contre", "word"),
        ("n°", "numéro", "number"), ("N°", "numéro", "number"), ("no", "numéro", "number"),
        ("#", "numéro", "number"),
    ],
}


# --------------------------------------------------------------------------------------------
# Number words (num2words, cached)
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=8192)
def _cardinal(n: int, lang: str) -> str:
    """num2words cardinal, without English's "one thousand, two hundred" commas."""
    if abs(n) >= 10**15:
        return _digits(str(abs(n)), lang) if n >= 0 else WORDS[lang]["minus"] + " " + _digits(str(-n), lang)
    words = num2words(n, lang=lang)
    return words.replace(",", "") if lang == "en" else words


@lru_cache(maxsize=4096)
def _ordinal(n: int, lang: str) -> str:
    """num2words ordinal: 23 → "twenty-third" / "dreiundzwanzigste" / "vingt-troisième"."""
    words = num2words(n, lang=lang, to="ordinal")
    return words.replace(",", "") if lang == "en" else words


@lru_cache(maxsize=1024)
def _year(n: int, lang: str) -> str:
    """A year: 1999 → "nineteen ninety-nine" / "neunzehnhundertneunundneunzig" / cardinal (fr).

    num2words has to='year' for en and de; French years are read as cardinals anyway.
    """
    if lang == "fr":
        return _cardinal(n, lang)
    try:
        return num2words(n, lang=lang, to="year")
    except (NotImplementedError, TypeError, ValueError):  # pragma: no cover - other languages
        return _cardinal(n, lang)


def _digits(digits: str, lang: str) -> str:
    """Digit by digit: "007" → "zero zero seven"."""
    return " ".join(_cardinal(int(d), lang) for d in digits if d.isdigit())


def _gendered(words: str, n: int, lang: str, gender: str | None) -> str:
    """The form of a cardinal before a noun: German "eins" → "ein"/"eine", French "un" → "une"."""
    if gender is None:
        return words
    if lang == "de" and n == 1:
        return "eine" if gender == "f" else "ein"
    if lang == "fr" and gender == "f":
        return re.sub(r"\bun$", "une", words)
    return words


def _int_words(int_str: str, lang: str, gender: str | None = None) -> str:
    """Words for a run of digits: leading zeros ("007") and very long runs are read digit by digit."""
    if len(int_str) > 1 and int_str.startswith("0"):
        return _digits(int_str, lang)
    if len(int_str) > 15:
        return _digits(int_str, lang)
    n = int(int_str)
    return _gendered(_cardinal(n, lang), n, lang, gender)


def _split_number(num: str, lang: str) -> tuple[str, str | None]:
    """A written number → (integer digits, fraction digits or None), by the language's style.

    >>> _split_number("1,234.5", "en"), _split_number("1.234,5", "de"), _split_number("3.5", "de")
    (('1234', '5'), ('1234', '5'), ('3', '5'))
    """
    num = num.replace("\u00a0", " ").replace("\u202f", " ")
    if "," in num and "." in num:  # both: the last one is the decimal separator, whatever the language
        lang = "en" if num.rfind(".") > num.rfind(",") else "de"
    if lang == "en":
        int_part, _, frac = num.partition(".")
        return int_part.replace(",", "").replace(" ", ""), (frac or None) if "." in num else None
    if "," in num:
        int_part, _, frac = num.partition(",")
        return int_part.replace(".", "").replace(" ", ""), frac
    if "." in num and not re.fullmatch(r"\d{1,3}(?:\.\d{3})+", num):
        int_part, _, frac = num.partition(".")
        return int_part.replace(" ", ""), frac
    return num.replace(".", "").replace(" ", ""), None


def _number_words(num: str, lang: str, sign: str | None = None, gender: str | None = None) -> str:
    """A written number (with its sign) → words. "-1,234.05" → "minus one thousand two hundred
    and thirty-four point zero five"."""
    int_str, frac = _split_number(num, lang)
    if frac is None:
        words = _int_words(int_str, lang, gender)
    else:
        head = _int_words(int_str, lang) if int_str else ""
        point = WORDS[lang]["point"]
        tail = f" {point} ".join(_digits(part, lang) for part in re.split(r"[.,]", frac))  # "1.2.3"
        words = f"{head} {point} {tail}".strip()
    if sign in ("-", "−"):
        words = f"{WORDS[lang]['minus']} {words}"
    elif sign == "+":
        words = f"{WORDS[lang]['plus']} {words}"
    return words


def _value(num: str, lang: str) -> Decimal:
    int_str, frac = _split_number(num, lang)
    try:
        return Decimal(f"{int_str or 0}.{frac}" if frac else (int_str or "0"))
    except InvalidOperation:  # pragma: no cover - the regexes only pass digits
        return Decimal(0)


def _is_singular(num: str, lang: str) -> bool:
    """Singular noun after this number? English/German: exactly 1; French: below 2 (1,5 kilomètre)."""
    int_str, frac = _split_number(num, lang)
    if lang == "fr":
        return abs(_value(num, lang)) < 2
    return frac is None and int_str.lstrip("0") == "1"


# --------------------------------------------------------------------------------------------
# Regex building blocks
# --------------------------------------------------------------------------------------------

# A number as written in each language (no sign). Order matters: grouped thousands first; the
# other style with both separators ("1.234,5" in English text, "1,234.5" in German) is read too.
_NUM = {
    "en": r"(?:\d{1,3}(?:\.\d{3})+,\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*|\.\d+)",
    "de": r"(?:\d{1,3}(?:,\d{3})+\.\d+|\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:\.\d+)+|\d+(?:,\d+)?)",
}
_NUM["fr"] = _NUM["de"]
# An optional sign, only where it cannot be a hyphen ("COVID-19", "5-3" keep theirs).
_SIGN = r"(?:(?<![^\s(\[{=/:;])(?P<sign>[-−+]))?"


def _snum(lang: str) -> str:
    """Signed number with groups "sign" and "num", not starting inside another number."""
    return _SIGN + r"(?<!\d)(?P<num>" + _NUM[lang] + r")(?!\d)"


def _pad(m: re.Match, out: str) -> str:
    """Spaces around a replacement where it would otherwise glue to a neighbouring word."""
    s, e, text = m.start(), m.end(), m.string
    if out and s > 0 and text[s - 1].isalnum() and not out[0].isspace():
        out = " " + out
    if out and e < len(text) and text[e].isalnum() and not out[-1].isspace():
        out = out + " "
    return out


def _sub(rx: re.Pattern, fn, text: str) -> str:
    """rx.sub with fn(match) → replacement or None (leave the match as it was), padded."""
    def repl(m: re.Match) -> str:
        out = fn(m)
        return m.group(0) if out is None else _pad(m, out)
    return rx.sub(repl, text)


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# --------------------------------------------------------------------------------------------
# Pass 1: LaTeX
# --------------------------------------------------------------------------------------------

_RX_MATH_SEGMENT = re.compile(  # contents bounded, so an unclosed delimiter costs little
    r"\$\$(?P<a>.{1,2000}?)\$\$"                              # $$ … $$
    r"|\\\[(?P<b>.{1,2000}?)\\\]"                             # \[ … \]
    r"|\\\((?P<c>.{1,2000}?)\\\)"                             # \( … \)
    r"|(?<![\\$\w])\$(?=[^\s$\d])(?P<d>[^$\n]*?[^\s$])\$(?!\d)"   # $ … $ (not "$5 and $6")
    r"|(?<![\\$\w])\$(?=\d[^$\n]*?[a-zA-Z\\^_=+])(?P<e>[^$\n]*?[^\s$])\$(?!\d)",  # $2^{10}$
    re.DOTALL,
)
_RX_TEX_TEXT = re.compile(r"\\(?:text|mathrm|mathbf|mathit|mathsf|mathcal|operatorname|textbf|textit)\{([^{}]*)\}")
_RX_TEX_SIZING = re.compile(r"\\(?:left|right|bigg|Bigg|big|Big)(?![a-zA-Z])")
_RX_TEX_BIGOP = re.compile(
    r"\\(?P<op>sum|prod|int|oint)(?![a-zA-Z])\s*"
    r"(?:_(?:\{(?P<lo>[^{}]*)\}|(?P<lo1>[^\s{\\]))|)\s*"
    r"(?:\^(?:\{(?P<hi>[^{}]*)\}|(?P<hi1>[^\s{\\]))|)"
)
_RX_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_RX_TEX_SQRT = re.compile(r"\\sqrt\s*(?:\[([^\]{}]*)\])?\s*\{([^{}]*)\}")
_RX_TEX_SUP = re.compile(r"\^\{([^{}]*)\}")
_RX_TEX_SUB = re.compile(r"_\{([^{}]*)\}")
_RX_TEX_GROUP = re.compile(r"(?<![\\\w^_}])\{([^{}]*)\}")
_RX_TEX_SPACE = re.compile(r"\\(?:[,;:! ]|(?:quad|qquad)(?![a-zA-Z]))")
_RX_TEX_COMMAND = re.compile(r"\\([a-zA-Z]+)")
_TEX_SYMBOLS = {
    "times": "times", "cdot": "times", "div": "divided_by", "pm": "pm", "mp": "mp", "le": "le",
    "leq": "le", "leqslant": "le", "ge": "ge", "geq": "ge", "geqslant": "ge", "ne": "ne",
    "neq": "ne", "approx": "approx", "lt": "lt", "gt": "gt", "infty": "infinity",
    "to": "tends_to", "rightarrow": "tends_to", "lim": "lim", "ldots": "dots", "cdots": "dots",
    "dots": "dots", "in": "in", "partial": "partial", "sin": "sin", "cos": "cos", "tan": "tan",
    "log": "log", "ln": "ln", "exp": "exp",
}
_TEX_VARIANTS = {"varepsilon": "epsilon", "vartheta": "theta", "varphi": "phi", "varpi": "pi",
                 "varrho": "rho", "varsigma": "sigma"}


def _power_phrase(exponent: str, lang: str) -> str:
    """The words after a base for "^exponent": "squared", "cubed" or "to the power of …"."""
    w = WORDS[lang]
    if exponent.strip() == "2":
        return w["squared"]
    if exponent.strip() == "3":
        return w["cubed"]
    return f"{w['power']} {exponent}"


def _latex_commands(text: str, lang: str) -> str:
    r"""LaTeX commands anywhere in the text → words; numbers stay digits for the later passes.

    \frac{3}{4} → "three quarters", \frac{a}{b} → "a over b", \sqrt{x} → "the square root of x",
    \sqrt[3]{x} → "the cube root of x", \sum_{i=1}^{n} → "the sum from i=1 to n",
    x^{10} → "x to the power of 10", x_{i} → "x sub i", \times → "times", \pi → "pi",
    \Delta → "capital delta", \text{m} → "m".
    """
    w = WORDS[lang]
    text = _RX_TEX_TEXT.sub(r" \1 ", text)
    text = _RX_TEX_SIZING.sub(" ", text)
    text = _RX_TEX_SPACE.sub(" ", text)

    def bigop(m: re.Match) -> str:
        out = w[{"oint": "int"}.get(m["op"], m["op"])]
        lo, hi = m["lo"] or m["lo1"], m["hi"] or m["hi1"]
        if lo:
            out += f" {w['from']} {lo}"
        if hi:
            out += f" {w['to']} {hi}"
        return f" {out} "

    text = _RX_TEX_BIGOP.sub(bigop, text)

    def frac(m: re.Match) -> str:
        a, b = m[1].strip(), m[2].strip()
        if a.isdigit() and b.isdigit():
            return f" {_fraction(int(a), int(b), lang)} "
        return f" {a} {w['over']} {b} "

    def sqrt(m: re.Match) -> str:
        index, arg = (m[1] or "").strip(), m[2].strip()
        if index in ("", "2"):
            return f" {w['sqrt']} {arg} "
        if index == "3":
            return f" {w['cbrt']} {arg} "
        n = _ordinal(int(index), lang) if index.isdigit() else f"{index}-th"
        return " " + w["root_n"].format(n=n) + f" {arg} "

    def sup(m: re.Match) -> str:
        return f" {_power_phrase(m[1], lang)} "

    # Innermost first, until nothing changes (nested \frac{\sqrt{x}}{2}, x^{2^{3}} …).
    for _ in range(20):
        before = text
        text = _RX_TEX_FRAC.sub(frac, text)
        text = _RX_TEX_SQRT.sub(sqrt, text)
        text = _RX_TEX_SUP.sub(sup, text)
        text = _RX_TEX_SUB.sub(lambda m: f" {w['sub']} {m[1]} ", text)
        text = _RX_TEX_GROUP.sub(r" \1 ", text)
        if text == before:
            break

    def command(m: re.Match) -> str:
        name = m[1]
        name = _TEX_VARIANTS.get(name, name)
        if name in _TEX_SYMBOLS:
            return f" {w[_TEX_SYMBOLS[name]]} "
        if name in _GREEK:
            return f" {_GREEK_NAMES[lang][name]} "
        if name.lower() in _GREEK and name[0].isupper():
            return " " + w["capital"].format(_GREEK_NAMES[lang][name.lower()]) + " "
        return f" {name} "

    return _RX_TEX_COMMAND.sub(command, text)


_RX_SEG_SUP = re.compile(r"\^\s*([-−]?\d+|\w)")
_RX_SEG_SUB = re.compile(r"_\s*(\w)")
_RX_SEG_FACTORIAL = re.compile(r"(?<=[\w)])!")
_SEG_OPERATORS = [("<=", "le"), (">=", "ge"), ("!=", "ne"), ("=", "equals"), ("<", "lt"),
                  (">", "gt"), ("+", "plus"), ("-", "minus"), ("−", "minus"), ("*", "times"),
                  ("/", "over")]


def _latex_math(segment: str, lang: str) -> str:
    r"""The inside of $…$, \(…\), \[…\] or $$…$$ → words, numbers included.

    "x^2 + y_i = \frac{1}{2}" → "x squared plus y sub i equals one half"
    """
    w = WORDS[lang]
    text = _latex_commands(segment, lang)
    text = _RX_SEG_SUP.sub(lambda m: f" {_power_phrase(m[1], lang)} ", text)
    text = _RX_SEG_SUB.sub(lambda m: f" {w['sub']} {m[1]} ", text)
    text = _RX_SEG_FACTORIAL.sub(f" {w['factorial']} ", text)
    text = text.replace("{", " ").replace("}", " ")
    text = _unicode_math(text, lang)
    for symbol, key in _SEG_OPERATORS:
        text = text.replace(symbol, f" {w[key]} ")
    text = _numbers(text, lang)
    return " ".join(text.split())


def pass_latex(text: str, lang: str) -> str:
    r"""LaTeX: math delimiters removed and their content spoken; commands elsewhere spoken.

    "$x^2$" → "x squared"; "\(\frac{a}{b}\)" → "a over b"; "Area: \pi r^2" → "Area: pi r^2"
    (the bare r^2 is left to the math pass).
    """
    if "$" not in text and "\\" not in text:
        return text
    text = _sub(_RX_MATH_SEGMENT,
                lambda m: _latex_math(next(g for g in m.groups() if g is not None), lang), text)
    if "\\" in text or "^{" in text or "_{" in text:
        text = _latex_commands(text, lang)
        text = re.sub(r"[ \t]{2,}", " ", text)
    return text


# --------------------------------------------------------------------------------------------
# Pass 1b: scientific notation
# --------------------------------------------------------------------------------------------

_RX_SCIENTIFIC = {
    lang: re.compile(r"(?<![\w.,])(?P<m>\d+(?:" + (r"\." if lang == "en" else r"[.,]") + r"\d+)?)"
                     r"[eE](?P<exp>[-−+]?\d{1,3})(?!\w|[.,]\d)")
    for lang in SUPPORTED_LANGUAGES
}
# A whole number up to this is said as a number ("3e8" → "three hundred million"); beyond it,
# and for fractions, "… times ten to the power of …".
_SCIENTIFIC_WHOLE_LIMIT = 10**12


def _scientific(m: re.Match, lang: str) -> str:
    mantissa, exponent = m["m"].replace(",", "."), int(m["exp"].replace("−", "-"))
    value = Decimal(mantissa).scaleb(exponent)
    if value == value.to_integral_value() and value < _SCIENTIFIC_WHOLE_LIMIT:
        grouped = f"{int(value):,}"  # grouped, so the year pass does not read 1.999e3 as a year
        return grouped if lang == "en" else grouped.replace(",", ".")
    if lang != "en":
        mantissa = mantissa.replace(".", ",")  # "1,234" (not "1.234", a thousands group there)
    w = WORDS[lang]
    return f"{mantissa} {w['times']} 10 {w['power']} {exponent}"


def pass_scientific(text: str, lang: str) -> str:
    """Scientific notation → a number the later passes read: "1e6 Hz" → "1,000,000 Hz" (→ "one
    million hertz"), "2.5e-3 m" → "2.5 times 10 to the power of -3 m" (→ "two point five times
    ten to the power of minus three meters"); de "mal 10 hoch", fr "fois 10 puissance"."""
    if "e" not in text and "E" not in text:
        return text
    return _sub(_RX_SCIENTIFIC[lang], lambda m: _scientific(m, lang), text)


# --------------------------------------------------------------------------------------------
# Pass 2: abbreviations
# --------------------------------------------------------------------------------------------

def _compile_abbreviations(lang: str) -> tuple[re.Pattern, list[tuple[str, str]]]:
    """One alternation of every abbreviation (longest first), and (spoken, kind) per group."""
    parts, out = [], []
    for written, spoken, kind in sorted(ABBREVIATIONS[lang], key=lambda a: -len(a[0])):
        body = re.escape(written).replace(r"\ ", r"\s?")
        lead = r"(?<![\w.])" if written[0].isalnum() else r"(?<![\w#])"
        if kind == "number":
            rx = lead + body + r"\s*(?=\d)"
        elif kind == "title":  # before a name
            rx = lead + body + r"(?!\w)(?=\s*[A-ZÄÖÜÀÂÉÈÊÎÔÙÛÇ])"
        elif written[-1].isalnum():
            rx = lead + body + r"(?!\w)(?!\.)"
        else:
            rx = lead + body
        parts.append(f"({rx})")
        out.append((spoken, kind))
    return re.compile("|".join(parts)), out


_ABBREVIATIONS = {lang: _compile_abbreviations(lang) for lang in SUPPORTED_LANGUAGES}
_RX_SENTENCE_END_AFTER = re.compile(r"\s*$|\s+[A-ZÄÖÜÀÂÉÈÊÎÔÙÛÇ]")


def pass_abbreviations(text: str, lang: str) -> str:
    """Common abbreviations → words.

    en: "Dr. Smith" → "Doctor Smith", "e.g." → "for example", "etc." → "et cetera", "vs." →
    "versus", "No. 5" / "#5" → "number 5"; de: "z. B." → "zum Beispiel", "Nr. 5" → "Nummer 5";
    fr: "M. Dupont" → "Monsieur Dupont", "n° 5" → "numéro 5". A sentence-final "etc." keeps
    its period.
    """
    rx, table = _ABBREVIATIONS[lang]

    def repl(m: re.Match) -> str:
        spoken, kind = table[m.lastindex - 1]
        out = spoken
        if kind == "number":
            out += " "
        elif kind == "word" and m.group(0).endswith(".") and _RX_SENTENCE_END_AFTER.match(m.string, m.end()):
            out += "."
        return _pad(m, out)

    return rx.sub(repl, text)


# --------------------------------------------------------------------------------------------
# Pass 3: dates
# --------------------------------------------------------------------------------------------

def _month_lookup(lang: str) -> dict[str, int]:
    table = {name: i + 1 for i, name in enumerate(MONTHS[lang])}
    table |= _MONTH_ALIASES[lang]
    if lang == "fr":
        table |= {k.capitalize(): v for k, v in table.items()}
    return table


_MONTH_NUMBER = {lang: _month_lookup(lang) for lang in SUPPORTED_LANGUAGES}
_MONTH_RX = {lang: _alternation(_MONTH_NUMBER[lang]) for lang in SUPPORTED_LANGUAGES}
_RX_ISO_DATE = re.compile(r"(?<![\d.-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
_RX_SLASH_DATE = re.compile(r"(?<![\d/.])(\d{1,2})/(\d{1,2})/(\d{4})(?![\d/])")
_RX_DOT_DATE = re.compile(r"(?<![\d.])(\d{1,2})\.(\d{1,2})\.(\d{4})(?!\d)")
_RX_NAMED_DATE = {
    # en "November 23, 2026" / "Nov. 23rd" and "23 November 2026"
    "en": [re.compile(r"(?<!\w)(?P<month>" + _MONTH_RX["en"] + r")\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?(?!\d)"
                      r"(?:,?\s+(?P<year>\d{4})(?!\d))?(?![\w:])"),
           re.compile(r"(?<![\d\w])(?P<day>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month>" + _MONTH_RX["en"]
                      + r")\.?(?:,?\s+(?P<year>\d{4})(?!\d))?(?!\w)")],
    # de "23. November 2026"
    "de": [re.compile(r"(?<![\d\w.])(?P<day>\d{1,2})\.\s*(?P<month>" + _MONTH_RX["de"]
                      + r")(?:\s+(?P<year>\d{4})(?!\d))?(?!\w)")],
    # fr "23 novembre 2026", "1er janvier"
    "fr": [re.compile(r"(?<![\d\w])(?P<day>\d{1,2})(?:er)?\s+(?P<month>" + _MONTH_RX["fr"]
                      + r")(?:\s+(?P<year>\d{4})(?!\d))?(?!\w)")],
}
_DE_DATIVE = {"am", "vom", "zum", "im", "beim", "dem", "den", "des", "seit", "bis"}


def _before(m: re.Match, width: int = 40) -> str:
    """The text just before a match (a bounded window: look-backs stay linear on long texts)."""
    return m.string[max(0, m.start() - width): m.start()]


def _previous_word(m: re.Match) -> str:
    before = _before(m).rstrip()
    found = re.search(r"(\w+)$", before)
    return found.group(1).lower() if found else ""


def _de_ordinal(n: int, previous: str) -> str:
    """German ordinal inflected after its article: "der dritte", "am dritten"."""
    word = _ordinal(n, "de")
    return word + "n" if previous in _DE_DATIVE else word


def _say_date(day: int, month: int, year: int | None, lang: str, m: re.Match) -> str | None:
    """A validated date → words in the language's usual spoken order."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    month_name = MONTHS[lang][month - 1]
    if lang == "en":
        out = f"{month_name} {_ordinal(day, 'en')}"
        return f"{out}, {_year(year, 'en')}" if year is not None else out
    if lang == "de":
        out = f"{_de_ordinal(day, _previous_word(m))} {month_name}"
    else:
        out = f"{'premier' if day == 1 else _cardinal(day, 'fr')} {month_name}"
    return f"{out} {_year(year, lang)}" if year is not None else out


def pass_dates(text: str, lang: str) -> str:
    """Dates → words.

    en: "2026-11-23" / "11/23/2026" / "Nov 23, 2026" → "November twenty-third, twenty twenty-six";
        "23 November 2026" → "the twenty-third of November, twenty twenty-six".
    de: "2026-11-23" / "23.11.2026" / "23. November 2026" → "dreiundzwanzigste November
        zweitausendsechsundzwanzig" ("am dreiundzwanzigsten …" after am/vom/zum …).
    fr: "2026-11-23" / "23/11/2026" / "23 novembre 2026" → "vingt-trois novembre deux mille
        vingt-six"; the first is "premier".
    Slash dates are month/day/year in English (day/month/year when the first part is over 12),
    day/month/year elsewhere.
    """
    if not any(c.isdigit() for c in text):
        return text
    text = _sub(_RX_ISO_DATE, lambda m: _say_date(int(m[3]), int(m[2]), int(m[1]), lang, m), text)

    def slash(m: re.Match) -> str | None:
        a, b, y = int(m[1]), int(m[2]), int(m[3])
        if lang == "en" and a <= 12:
            return _say_date(b, a, y, lang, m)
        if lang != "en" and b > 12 and a <= 12:
            return _say_date(b, a, y, lang, m)
        return _say_date(a, b, y, lang, m)

    text = _sub(_RX_SLASH_DATE, slash, text)
    text = _sub(_RX_DOT_DATE, lambda m: _say_date(int(m[1]), int(m[2]), int(m[3]), lang, m), text)

    def named(m: re.Match) -> str | None:
        year = int(m["year"]) if m["year"] else None
        month = _MONTH_NUMBER[lang][m["month"]]
        day = int(m["day"])
        if lang == "en" and m.group(0)[0].isdigit():
            if not 1 <= day <= 31:
                return None
            out = f"the {_ordinal(day, 'en')} of {MONTHS['en'][month - 1]}"
            return f"{out}, {_year(year, 'en')}" if year is not None else out
        return _say_date(day, month, year, lang, m)

    for rx in _RX_NAMED_DATE[lang]:
        text = _sub(rx, named, text)
    return text


# --------------------------------------------------------------------------------------------
# Pass 4: times
# --------------------------------------------------------------------------------------------

_AMPM = r"(?P<ampm>[aApP]\.?\s?[mM]\.?)(?![\w])"
_RX_TIME = {
    "en": re.compile(r"(?<![\d:.,])(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
                     r"(?:\s?" + _AMPM + r")?"),
    "de": re.compile(r"(?<![\d:.,])(?P<h>[01]?\d|2[0-4])(?::(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
                     r"(?:\s?Uhr(?!\w))?|\.(?P<m2>[0-5]\d)\s?Uhr(?!\w)|\s?Uhr(?!\w))"),
    "fr": re.compile(r"(?<![\d:.,])(?P<h>[01]?\d|2[0-4])(?::(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
                     r"|\s?h\s?(?P<m2>[0-5]\d)(?!\d)|\s?h(?!\w))"),
}
_RX_EN_HOUR_AMPM = re.compile(r"(?<![\d:.,])(?P<h>1[0-2]|0?[1-9])\s?" + _AMPM)


def _ampm_words(raw: str) -> str:
    return "a.m." if raw.lower().startswith("a") else "p.m."


def pass_times(text: str, lang: str) -> str:
    """Clock times → words (24-hour style as written; English keeps a written a.m./p.m.).

    en: "14:30" → "fourteen thirty", "9:05" → "nine oh five", "9:00" → "nine o'clock",
        "14:00" → "fourteen hundred", "2:30 pm" → "two thirty p.m.", "9 am" → "nine a.m.".
    de: "14:30" / "14.30 Uhr" → "vierzehn Uhr dreißig", "1 Uhr" → "ein Uhr".
    fr: "14:30" / "14h30" → "quatorze heures trente", "1h05" → "une heure cinq".
    Seconds: "… and fifteen seconds" / "und fünfzehn Sekunden" / "et quinze secondes".
    """
    if ":" not in text and not re.search(r"\d\s?(?:[aApP]\.?\s?[mM]|Uhr|h)", text):
        return text
    w = WORDS[lang]

    def seconds(raw: str | None) -> str:
        if not raw:
            return ""
        s = int(raw)
        gender = "f" if lang in ("de", "fr") else None
        number = _gendered(_cardinal(s, lang), s, lang, gender)
        return f" {w['and']} {number} {w['second'] if s == 1 else w['seconds']}"

    def en(m: re.Match) -> str:
        h, mi = int(m["h"]), int(m["m"])
        hour = _cardinal(h, "en")
        if m["ampm"]:
            minutes = "" if mi == 0 else (f" oh {_cardinal(mi, 'en')}" if mi < 10 else f" {_cardinal(mi, 'en')}")
            return f"{hour}{minutes}{seconds(m['s'])} {_ampm_words(m['ampm'])}"
        if mi == 0:
            if h == 0:
                minutes = ""
                hour = w["midnight"]
            elif h <= 12:
                minutes = f" {w['oclock']}"
            else:
                minutes = f" {w['hundred_hours']}"
        elif mi < 10:
            minutes = f" {w['oh']} {_cardinal(mi, 'en')}"
        else:
            minutes = f" {_cardinal(mi, 'en')}"
        return f"{hour}{minutes}{seconds(m['s'])}"

    def other(m: re.Match) -> str:
        h = int(m["h"])
        raw_minutes = m["m"] or m["m2"]
        mi = int(raw_minutes) if raw_minutes else 0
        if lang == "de":
            hour = f"{_gendered(_cardinal(h, 'de'), h, 'de', 'm')} {w['uhr']}"
        else:
            hour = f"{_gendered(_cardinal(h, 'fr'), h, 'fr', 'f')} {w['heure'] if h <= 1 else w['heures']}"
        minutes = f" {_gendered(_cardinal(mi, lang), mi, lang, 'f' if lang == 'fr' else None)}" if mi else ""
        return f"{hour}{minutes}{seconds(m['s'])}"

    if lang == "en":
        text = _sub(_RX_TIME["en"], en, text)
        return _sub(_RX_EN_HOUR_AMPM, lambda m: f"{_cardinal(int(m['h']), 'en')} {_ampm_words(m['ampm'])}", text)
    return _sub(_RX_TIME[lang], other, text)


# --------------------------------------------------------------------------------------------
# Pass 5: phone numbers and other digit runs
# --------------------------------------------------------------------------------------------

_RX_PHONE = re.compile(
    r"(?<![\w+.,])(?P<plus>\+\s?)?\(?\d+\)?(?:[ .\-]\(?\d+\)?|\(\d+\))*(?![\w])(?![.,]\d)"
)
_RX_GROUPED_NUMBER = re.compile(r"\d{1,3}(?:[ \u00a0\u202f.,]\d{3})+")


def pass_phone(text: str, lang: str) -> str:
    """Phone-like digit runs → digit by digit, a comma between groups.

    A run counts when it has a leading + (country code) or parentheses, or at least two
    separators (space, dash, dot), or one dash; and at least seven digits.
    "+1 (555) 123-4567" → "plus one, five five five, one two three, four five six seven";
    "555-1234" → "five five five, one two three four". Thousands-grouped numbers
    ("1 000 000", "1.234.567") are left to the number pass.
    """
    def repl(m: re.Match) -> str | None:
        run = m.group(0)
        groups = re.findall(r"\d+", run)
        if sum(len(g) for g in groups) < 7:
            return None
        body = run[len(m["plus"] or ""):]
        separators = re.findall(r"[ .\-]", body)
        has_parens = "(" in body
        if not (m["plus"] or has_parens or len(separators) >= 2 or separators == ["-"]):
            return None
        if not m["plus"] and not has_parens and (_RX_GROUPED_NUMBER.fullmatch(body) or _RX_YEAR_RANGE.fullmatch(body)):
            return None  # "1 000 000", "1.234.567", "1990-1995"
        spoken = ", ".join(_digits(g, lang) for g in groups)
        return f"{WORDS[lang]['plus']} {spoken}" if m["plus"] else spoken

    return _sub(_RX_PHONE, repl, text)


# --------------------------------------------------------------------------------------------
# Passes 6 and 7: ranges and powers (before currencies and units take their numbers)
# --------------------------------------------------------------------------------------------

_RX_RANGE = re.compile(r"(?<=\d)(?:-|\s?–\s?)(?=[$€£¥]?\d)")
_RX_RANGE_LEFT = re.compile(r"(?<=[\s(\[])[$€£¥]?[\d.,]+$")
_RX_POWER = re.compile(r"(?<=[\w)])\s?\^\s?(?P<exp>[-−]?\d+(?:[.,]\d+)?|[A-Za-z])(?!\w)")


def pass_ranges(text: str, lang: str) -> str:
    """A dash between two numbers is "to" / "bis" / "à": "5-10 km" → "5 to 10 km", "$5-$10",
    "pages 10–20". Words with digits ("COVID-19") and spaced minus signs ("10 - 4") are not ranges.
    """
    if "-" not in text and "–" not in text:
        return text
    word = WORDS[lang]["to"]

    def repl(m: re.Match) -> str | None:
        before = _before(m)
        if m.start() <= len(before):
            before = " " + before  # the start of the text counts as a space
        if not _RX_RANGE_LEFT.search(before):
            return None  # the left side is not a plain number ("COVID-19", "x1-2")
        return f" {word} "

    return _sub(_RX_RANGE, repl, text)


def pass_powers(text: str, lang: str) -> str:
    """ "2^10" → "2 to the power of 10", "x^2" → "x squared", "10^-3" → "10 to the power of -3"
    (de "hoch", fr "puissance"); before the units pass, so "3 × 10^8 m/s" keeps its unit."""
    if "^" not in text:
        return text
    return _sub(_RX_POWER, lambda m: _power_phrase(m["exp"], lang), text)


# --------------------------------------------------------------------------------------------
# Pass 8: currencies
# --------------------------------------------------------------------------------------------

_CUR_SYMBOL_RX = _alternation(_CURRENCY_SYMBOLS)
_CUR_CODE_RX = "|".join(_CURRENCY_CODES)


def _compile_currency(lang: str) -> tuple[re.Pattern, re.Pattern]:
    scale = r"(?:\s+(?P<scale>" + _alternation(_SCALES[lang]) + r")(?![\w]))?"
    before = re.compile(
        r"(?:(?<![^\s(\[{=/:;])(?P<sign>[-−]))?(?:(?P<sym>" + _CUR_SYMBOL_RX + r")|(?<!\w)(?P<code>"
        + _CUR_CODE_RX + r"))\s?(?<![\d.,])(?P<num>" + _NUM[lang] + r")(?!\d)" + scale
    )
    after = re.compile(
        _snum(lang) + scale + r"\s?(?:(?P<sym>" + _CUR_SYMBOL_RX + r")|(?P<code>" + _CUR_CODE_RX
        + r")(?!\w))"
    )
    return before, after


_RX_CURRENCY = {lang: _compile_currency(lang) for lang in SUPPORTED_LANGUAGES}


def _say_money(m: re.Match, lang: str) -> str:
    code = _CURRENCY_SYMBOLS.get(m["sym"]) if m["sym"] else m["code"]
    major_s, major_p, major_g, minor_s, minor_p, minor_g = _CURRENCY_NAMES[lang][code]
    num, sign = m["num"], m["sign"]
    minus = f"{WORDS[lang]['minus']} " if sign in ("-", "−") else ""
    if m["scale"]:
        scale_s, scale_p = _SCALES[lang][m["scale"]]
        singular = _is_singular(num, lang)
        scale_word = scale_s if singular else scale_p
        amount = _number_words(num, lang, gender="f" if lang == "de" and scale_s != "tausend" else None)
        if lang == "fr" and scale_s != "mille":
            connector = "d'" if major_p[0] in "aeiouyéè" else "de "
            return f"{minus}{amount} {scale_word} {connector}{major_p}"
        return f"{minus}{amount} {scale_word} {major_p}"
    int_str, frac = _split_number(num, lang)
    if frac is not None and (len(frac) > 2 or minor_s is None):
        return f"{minus}{_number_words(num, lang)} {major_p}"
    major = int(int_str or "0")
    minor = int((frac or "0").ljust(2, "0"))
    parts = []
    if major or not minor:
        words = _number_words(int_str or "0", lang, gender=major_g)
        parts.append(f"{words} {major_s if _is_singular(int_str or '0', lang) else major_p}")
    if minor:
        words = _gendered(_cardinal(minor, lang), minor, lang, minor_g)
        parts.append(f"{words} {minor_s if (minor == 1 or (lang == 'fr' and minor < 2)) else minor_p}")
    return minus + f" {WORDS[lang]['and']} ".join(parts)


def pass_currency(text: str, lang: str) -> str:
    """Money → words, the currency name after the amount, cents spoken separately.

    "$5" / "5 $" / "USD 5" → "five dollars"; "€3.50" → "three euros and fifty cents";
    "£1" → "one pound"; "$0.99" → "ninety-nine cents"; "¥100" → "one hundred yen";
    "$1.5 million" → "one point five million dollars"; de "3,50 €" → "drei Euro und fünfzig
    Cent"; fr "3,50 €" → "trois euros et cinquante centimes", "2 millions €" → "deux millions
    d'euros".
    """
    if not re.search(r"[$€£¥₹]|USD|EUR|GBP|JPY|CHF|INR", text):
        return text
    before, after = _RX_CURRENCY[lang]
    text = _sub(before, lambda m: _say_money(m, lang), text)
    return _sub(after, lambda m: _say_money(m, lang), text)


# --------------------------------------------------------------------------------------------
# Pass 9: percentages
# --------------------------------------------------------------------------------------------

_RX_PERCENT = {lang: re.compile(_snum(lang) + r"\s?(?P<unit>%|‰)") for lang in SUPPORTED_LANGUAGES}


def pass_percent(text: str, lang: str) -> str:
    """"50%" → "fifty percent", "-2.5 %" → "minus two point five percent", de "Prozent",
    fr "pour cent"; "‰" → "per mille" / "Promille" / "pour mille"."""
    if "%" not in text and "‰" not in text:
        return text
    w = WORDS[lang]
    return _sub(_RX_PERCENT[lang], lambda m: f"{_number_words(m['num'], lang, m['sign'])} "
                f"{w['percent'] if m['unit'] == '%' else w['permille']}", text)


# --------------------------------------------------------------------------------------------
# Pass 10: units
# --------------------------------------------------------------------------------------------

_RX_DECADE_NUMBER = re.compile(r"(?:1[1-9]\d0|20\d0|\d0)s")
_RX_UNIT = {
    lang: re.compile(_snum(lang) + r"\s?(?P<unit>" + _alternation(UNITS[lang]) + r")(?!\w)(?![²³])")
    for lang in SUPPORTED_LANGUAGES
}


def pass_units(text: str, lang: str) -> str:
    """A number and a unit symbol → words, the unit singular or plural to match.

    "1 km" → "one kilometer", "5 km/h" → "five kilometers per hour", "20 °C" → "twenty
    degrees Celsius", "3.5 MB" → "three point five megabytes", "-5°C" → "minus five degrees
    Celsius"; de "1 kg" → "ein Kilogramm", "2 h" → "zwei Stunden"; fr "1,5 km" → "un virgule
    cinq kilomètre" (French singular below two), "1 h" → "une heure".
    """
    def repl(m: re.Match) -> str | None:
        if m["unit"] == "s" and (_RX_DECADE_NUMBER.fullmatch(m.group(0)) or (m.start() and m.string[m.start() - 1] in "'’")):
            return None  # "the 1990s", "the '80s": decades, for the years pass
        sing, plural, gender = UNITS[lang][m["unit"]]
        words = _number_words(m["num"], lang, m["sign"], gender)
        return f"{words} {sing if _is_singular(m['num'], lang) else plural}"

    return _sub(_RX_UNIT[lang], repl, text)


# --------------------------------------------------------------------------------------------
# Pass 11: math
# --------------------------------------------------------------------------------------------

_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_RX_SUPERSCRIPT = re.compile(r"(?<=[\w)])([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)")
_FRACTION_SIGN = r"(?:(?<![^\s(\[{=])(?P<sign>[-−+]))?"
_RX_MIXED_FRACTION = re.compile(_FRACTION_SIGN + r"(?<![\d/.,])(?P<whole>\d+)\s(?P<a>\d+)/(?P<b>\d+)(?![\d/]|[.,]\d)")
_RX_FRACTION = re.compile(_FRACTION_SIGN + r"(?<![\d/.,])(?P<a>\d+)/(?P<b>\d+)(?![\d/]|[.,]\d)")
# Unicode fractions: "½", "1½", "1 ½", "1⁄2" (fraction slash), "¹⁄₂" → "1/2", "1 1/2".
_VULGAR_FRACTIONS = {"½": "1/2", "⅓": "1/3", "⅔": "2/3", "¼": "1/4", "¾": "3/4", "⅕": "1/5", "⅖": "2/5",
                     "⅗": "3/5", "⅘": "4/5", "⅙": "1/6", "⅚": "5/6", "⅐": "1/7", "⅛": "1/8", "⅜": "3/8",
                     "⅝": "5/8", "⅞": "7/8", "⅑": "1/9", "⅒": "1/10"}
_RX_VULGAR_FRACTION = re.compile(r"(?P<before>\w?)\s?(?P<f>[" + "".join(_VULGAR_FRACTIONS) + "])")
_RX_SLASHED_FRACTION = re.compile(r"(?P<a>[\d⁰¹²³⁴⁵⁶⁷⁸⁹]+)⁄(?P<b>[\d₀₁₂₃₄₅₆₇₈₉]+)")
_SUB_AND_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹₀₁₂₃₄₅₆₇₈₉", "01234567890123456789")
_RX_ALWAYS_OPERATORS = re.compile(r"\s*([×÷≤≥≠≈±∓−∞√])\s*")
_ALWAYS = {"×": "times", "÷": "divided_by", "≤": "le", "≥": "ge", "≠": "ne", "≈": "approx",
           "±": "pm", "∓": "mp", "−": "minus", "∞": "infinity", "√": "sqrt"}
_RX_EQUALS = re.compile(r"(?<![=<>!])\s*=\s*(?![=>])")
_RX_COMPARE = re.compile(r"(?<=[\w)])(?P<l>\s*)(?P<op><=|>=|!=|<|>)(?P<r>\s*)(?=[-−]?[\w(])")
_RX_PLUS = re.compile(r"(?<=[\w)²³])\s*\+\s*(?=[\w(])")
_RX_MINUS_TIMES = re.compile(r"(?<=[\w)])(?P<l>\s*)(?P<op>[-*·])(?P<r>\s*)(?=[\w(])")
_COMPARE = {"<": "lt", ">": "gt", "<=": "le", ">=": "ge", "!=": "ne"}


def _fraction(a: int, b: int, lang: str) -> str:
    """A numeric fraction → words: 3/4 → "three quarters" / "drei Viertel" / "trois quarts";
    denominators over 20 are read "a over b" / "a durch b" / "a sur b"."""
    w = WORDS[lang]
    if b == 0 or b > 20 or b == 1:
        return f"{_cardinal(a, lang)} {w['over']} {_cardinal(b, lang)}"
    if lang == "en":
        if b == 2:
            name = "half" if a == 1 else "halves"
        elif b == 4:
            name = "quarter" if a == 1 else "quarters"
        else:
            name = _ordinal(b, "en") + ("" if a == 1 else "s")
        return f"{_cardinal(a, 'en')} {name}"
    if lang == "de":
        count = _gendered(_cardinal(a, "de"), a, "de", "n")
        if b == 2:
            return f"{count} {'halb' if a == 1 else 'halbe'}"
        stem = _ordinal(b, "de")
        return f"{count} {stem[:-1].capitalize()}el"
    count = _gendered(_cardinal(a, "fr"), a, "fr", "m")
    plural = "s" if a >= 2 else ""
    name = {2: "demi", 3: "tiers", 4: "quart"}.get(b) or _ordinal(b, "fr")
    return f"{count} {name if name == 'tiers' else name + plural}"


def _sign_word(sign: str | None, lang: str) -> str:
    if not sign:
        return ""
    return f"{WORDS[lang]['plus' if sign == '+' else 'minus']} "


def _ascii_fractions(text: str) -> str:
    """Unicode fractions → "a/b", a whole number before one making a mixed fraction ("1½" →
    "1 1/2"), so the fraction regexes read them all."""
    def vulgar(m: re.Match) -> str:
        before = m["before"]
        return f"{before}{' ' if before else ''}{_VULGAR_FRACTIONS[m['f']]}"

    text = _RX_SLASHED_FRACTION.sub(lambda m: f"{m['a']}/{m['b']}".translate(_SUB_AND_SUPERSCRIPT_DIGITS), text)
    return _RX_VULGAR_FRACTION.sub(vulgar, text)


def _unicode_math(text: str, lang: str) -> str:
    """Greek letters written as Unicode → their names (π → "pi", Δ → "capital delta")."""
    names = _GREEK_NAMES[lang]
    for ch, name in _GREEK_UNICODE.items():
        if ch in text:
            text = re.sub(re.escape(ch), f" {names[name]} ", text)
    for ch, name in _GREEK_UNICODE_CAPITAL.items():
        if ch in text:
            text = text.replace(ch, " " + WORDS[lang]["capital"].format(names[name]) + " ")
    return text


def pass_math(text: str, lang: str) -> str:
    """Plain-text math → words; the numbers themselves are left to the number passes.

    "3/4" → "three quarters", "1 1/2" → "one and one half", "x²" → "x squared", "5 + 3 = 8" → "5 plus 3 equals 8", "7 × 6", "8 ÷ 2", "a ≤ b",
    "x < 5" → "x is less than 5", "10 - 4" → "10 minus 4", "3 * 4" → "3 times 4", "π" → "pi".
    A minus or a comparison needs a number on one side, or spaces on both ("well-known" and
    "<tag>" stay as they are).
    """
    w = WORDS[lang]
    if not text.isascii():
        text = _ascii_fractions(text)
    if "/" in text:
        text = re.sub(r"(?<![\d/])24/7(?![\d/])", lambda m: f"{_cardinal(24, lang)} {_cardinal(7, lang)}", text)
        text = _sub(_RX_MIXED_FRACTION, lambda m: f"{_sign_word(m['sign'], lang)}{_cardinal(int(m['whole']), lang)} "
                    f"{w['and']} {_fraction(int(m['a']), int(m['b']), lang)}", text)
        text = _sub(_RX_FRACTION, lambda m: _sign_word(m["sign"], lang) + _fraction(int(m["a"]), int(m["b"]), lang), text)
    if _RX_SUPERSCRIPT.search(text):
        text = _sub(_RX_SUPERSCRIPT, lambda m: _power_phrase(m[1].translate(_SUPERSCRIPTS), lang), text)
    text = _unicode_math(text, lang)
    text = _sub(_RX_ALWAYS_OPERATORS, lambda m: f" {w[_ALWAYS[m[1]]]} ", text)
    if "=" in text:
        text = _sub(_RX_EQUALS, lambda m: f" {w['equals']} ", text)

    def spaced_or_numeric(m: re.Match, key: str) -> str | None:
        s, e = m.start(), m.end()
        numeric = m.string[s - 1].isdigit() or (e < len(m.string) and m.string[e].isdigit())
        if not numeric and not (m["l"] and m["r"]):
            return None
        return f" {w[key]} "

    if "<" in text or ">" in text or "!=" in text:
        text = _sub(_RX_COMPARE, lambda m: spaced_or_numeric(m, _COMPARE[m["op"]]), text)
    if "+" in text:
        text = _sub(_RX_PLUS, lambda m: f" {w['plus']} ", text)

    def minus_times(m: re.Match) -> str | None:
        s, e = m.start(), m.end()
        before, after = m.string[s - 1], m.string[e] if e < len(m.string) else ""
        if m["op"] == "-":
            # "10 - 4" (spaced, a digit on a side) is minus; "5-3", "well-known" stay.
            if m["l"] and m["r"] and (before.isdigit() or after.isdigit()):
                return f" {w['minus']} "
            return None
        if before.isdigit() or after.isdigit():
            return f" {w['times']} "
        return None

    if "-" in text or "*" in text or "·" in text:
        text = _sub(_RX_MINUS_TIMES, minus_times, text)
    return text


# --------------------------------------------------------------------------------------------
# Pass 12: ordinals
# --------------------------------------------------------------------------------------------

_RX_ORDINAL = {
    "en": re.compile(r"(?<![\d.,])(?P<n>\d+)(?P<suf>st|nd|rd|th)(?!\w)"),
    "fr": re.compile(r"(?<![\d.,])(?P<n>\d+)(?P<suf>er|re|ère|e|ème|è|nde|nd)(?!\w)"),
    "de": re.compile(r"(?<!\w)(?P<art>(?i:der|die|das|dem|den|des|am|im|zum|zur|vom|beim))\s+"
                     r"(?P<n>\d{1,4})\.(?=\s)"),
}


def pass_ordinals(text: str, lang: str) -> str:
    """Ordinals → words. en "21st" → "twenty-first"; fr "1er" → "premier", "1re" →
    "première", "3e" → "troisième"; de "am 3." → "am dritten", "der 2." → "der zweite" (German
    only after an article, since "3." ends sentences too)."""
    def repl(m: re.Match) -> str:
        n = int(m["n"])
        if lang == "de":
            return f"{m['art']} {_de_ordinal(n, m['art'].lower())}"
        if lang == "fr" and n == 1:
            return "première" if m["suf"] in ("re", "ère") else "premier"
        return _ordinal(n, lang)

    return _sub(_RX_ORDINAL[lang], repl, text)


# --------------------------------------------------------------------------------------------
# Pass 13: years
# --------------------------------------------------------------------------------------------

_YEAR = r"(?:1[1-9]\d\d|20\d\d)"
_RX_YEAR_RANGE = re.compile(r"(?<![\d.,])(?P<a>" + _YEAR + r")\s?[-–]\s?(?P<b>" + _YEAR + r")(?![\d]|[.,]\d)")
_RX_DECADE = re.compile(r"(?<![\d.,'’])(?P<y>" + _YEAR + r")s(?!\w)")
_RX_DE_DECADE = re.compile(r"(?<![\d.,])(?P<y>" + _YEAR + r"|[1-9]0)er(?!\w)")
_RX_SHORT_DECADE = re.compile(r"['’](?P<y>\d0)s(?!\w)")
_RX_YEAR = re.compile(r"(?<![\d.,:/])(?P<y>" + _YEAR + r")(?![\d]|[.,]\d)")


def _plural_word(words: str) -> str:
    """"nineteen ninety" → "nineteen nineties", "twenty twenty" → "twenty twenties"."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def pass_years(text: str, lang: str) -> str:
    """Four-digit numbers 1100–2099 standing alone are years; also decades.

    en "in 1999" → "in nineteen ninety-nine", "the 1990s" → "the nineteen nineties", "'80s" →
    "eighties"; de "1999" → "neunzehnhundertneunundneunzig", "die 1990er" →
    "die neunzehnhundertneunziger"; fr years are cardinals ("mille neuf cent quatre-vingt-dix-neuf").
    """
    if lang == "en":
        text = _sub(_RX_DECADE, lambda m: _plural_word(_year(int(m["y"]), "en")), text)
        text = _sub(_RX_SHORT_DECADE, lambda m: _plural_word(_cardinal(int(m["y"]), "en")), text)
    elif lang == "de":
        text = _sub(_RX_DE_DECADE, lambda m: (_year(int(m["y"]), "de") if len(m["y"]) == 4
                                              else _cardinal(int(m["y"]), "de")) + "er", text)

    def year(m: re.Match) -> str | None:
        s = m.start()
        if s and m.string[s - 1] in "-−+" and (s == 1 or not m.string[s - 2].isalnum()):
            return None  # a signed number, not a year
        return _year(int(m["y"]), lang)

    return _sub(_RX_YEAR, year, text)


# --------------------------------------------------------------------------------------------
# Pass 14: numbers
# --------------------------------------------------------------------------------------------

_RX_NUMBER = {lang: re.compile(_snum(lang)) for lang in SUPPORTED_LANGUAGES}


_DE_FEMININE = {"Million", "Milliarde", "Billion", "Minute", "Stunde", "Sekunde", "Woche", "Nacht",
                "Person", "Seite", "Stelle", "Zahl", "Frage", "Sache", "Flasche", "Tasse", "Frau"}
_RX_NEXT_WORD = re.compile(r"\s+([A-ZÄÖÜ][a-zäöüß]+)")
_RX_PREVIOUS_WORD = re.compile(r"(?:^|([.!?:]\s*)|\s)([A-ZÄÖÜ]\w*)\s+$")


def _de_gender(m: re.Match) -> str | None:
    """German "1" before a noun is "ein"/"eine" ("1 Jahr", "1 Woche"), but stays "eins" after a
    noun it labels ("Kapitel 1 Abschnitt 2"). Only the feminine nouns in a short list get "eine"."""
    following = _RX_NEXT_WORD.match(m.string, m.end())
    if not following:
        return None
    window = _before(m)
    previous = _RX_PREVIOUS_WORD.search(window)
    at_text_start = m.start() <= len(window)
    if previous and previous.group(1) is None and (previous.start(2) > 0 or not at_text_start):
        return None  # a capitalised word before, not at the start of a sentence: a label
    return "f" if following.group(1) in _DE_FEMININE else "m"


def _numbers(text: str, lang: str) -> str:
    def repl(m: re.Match) -> str:
        gender = None
        if lang == "de" and not m["sign"] and m["num"] == "1":
            gender = _de_gender(m)
        return _number_words(m["num"], lang, m["sign"], gender)

    return _sub(_RX_NUMBER[lang], repl, text)


def pass_numbers(text: str, lang: str) -> str:
    """Every number left → words: "1,234" → "one thousand two hundred and thirty-four",
    "-7" → "minus seven", "3.14" → "three point one four", "007" → "zero zero seven";
    de "1.234,5" → "eintausendzweihundertvierunddreißig Komma fünf"; fr "3,5" → "trois virgule
    cinq"."""
    return _numbers(text, lang)


# --------------------------------------------------------------------------------------------
# Pass 15: tidy
# --------------------------------------------------------------------------------------------

_RX_SPACES = re.compile(r"[ \t\u00a0\u202f]+")
_RX_SPACE_LINE_EDGES = re.compile(r" *\n *")
# A space the passes left before a comma or full stop that ends a clause ("half , y"), or
# inside brackets ("( one half )"); French keeps its space before ; : ! ?.
_RX_SPACE_BEFORE_PUNCTUATION = {
    lang: re.compile(r" +(?=[,." + ("" if lang == "fr" else ";:!?") + r"](?:\s|$|[\"'”’»)\]]))|(?<=[(\[]) +| +(?=[)\]])")
    for lang in SUPPORTED_LANGUAGES
}


def pass_tidy(text: str, lang: str) -> str:
    """Runs of spaces → one space; no spaces at line edges, before a clause's comma or full
    stop, or inside brackets."""
    text = _RX_SPACES.sub(" ", text)
    text = _RX_SPACE_BEFORE_PUNCTUATION[lang].sub("", text)
    return _RX_SPACE_LINE_EDGES.sub("\n", text).strip()


PASSES = (pass_latex, pass_scientific, pass_abbreviations, pass_dates, pass_times, pass_phone, pass_ranges,
          pass_powers, pass_currency, pass_percent, pass_units, pass_math, pass_ordinals, pass_years,
          pass_numbers, pass_tidy)


def normalize(text: str, language: str = "en") -> str:
    """The spoken form of text: numbers, dates, times, money, units, math and LaTeX as words.

    language: "en", "de" or "fr" (regional forms such as "en-US" or "de_DE" too); anything
    else raises ValueError naming the supported ones.
    """
    lang = resolve_language(language)
    for step in PASSES:
        text = step(text, lang)
    return text


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.speech.normalize TEXT [--language en]` (what `vidspool normalize` runs)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="vidspool normalize", description="the spoken form of a text")
    parser.add_argument("text")
    parser.add_argument("--language", default="en")
    args = parser.parse_args(argv)
    try:
        print(normalize(args.text, args.language))
    except ValueError as exc:
        print(f"vidspool: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
