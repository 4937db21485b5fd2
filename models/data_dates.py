"""Human-written dates in many formats and four languages, paired with their ISO 8601 form.

    "vendredi 5 mars 2021"        -> "2021-03-05"
    "the 5th of March 2021"       -> "2021-03-05"
    "Freitag, 5. März 2021"       -> "2021-03-05"
    "05/03/2021"                  -> "2021-03-05"

Everything is generated from a seed: the calendar dates are shuffled, the first ones become the
training dates and the next ones the held-out dates, so no calendar date is in both splits. Each
date is then rendered in a format drawn from the split's format mix.

Numeric formats are unambiguous by construction: day-month-year with '/', '.' or '-', and
year-month-day. The US month/day/year order is left out on purpose: "03/05/2021" would then mean
two dates, and no model could be exact on it.

The representation knobs, which the seq2seq experiment in docs/models.md varies:
- the format mix of each split (`FORMAT_MIXES`): all languages, or English only, or numeric only;
- the source tokenisation (`tokenize`): characters, words with whole numbers, or words with digits.
"""
from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass

FIRST_DATE = datetime.date(1900, 1, 1)
LAST_DATE = datetime.date(2099, 12, 31)

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre"],
}
WEEKDAYS = {  # Monday first, as date.weekday() counts
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
}


def english_ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _fields(date: datetime.date, language: str) -> dict:
    month = MONTHS[language][date.month - 1]
    return dict(
        d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}", yyyy=f"{date.year:04d}",
        month=month, mon=month[:3], weekday=WEEKDAYS[language][date.weekday()],
        wd=WEEKDAYS[language][date.weekday()][:3], ord=english_ordinal(date.day),
        fr_day="1er" if date.day == 1 else str(date.day),
    )


# Format name -> (language of the words in it, template).
FORMATS = {
    "en_long": ("en", "{month} {d}, {yyyy}"),
    "en_weekday": ("en", "{weekday}, {month} {d}, {yyyy}"),
    "en_ordinal": ("en", "{month} {ord}, {yyyy}"),
    "en_the_of": ("en", "the {ord} of {month} {yyyy}"),
    "en_day_first": ("en", "{d} {month} {yyyy}"),
    "en_short": ("en", "{mon} {d} {yyyy}"),
    "en_short_weekday": ("en", "{wd} {d} {mon} {yyyy}"),
    "fr_long": ("fr", "{fr_day} {month} {yyyy}"),
    "fr_weekday": ("fr", "{weekday} {fr_day} {month} {yyyy}"),
    "fr_le": ("fr", "le {fr_day} {month} {yyyy}"),
    "de_long": ("de", "{d}. {month} {yyyy}"),
    "de_weekday": ("de", "{weekday}, {d}. {month} {yyyy}"),
    "de_am": ("de", "am {d}. {mon} {yyyy}"),
    "es_long": ("es", "{d} de {month} de {yyyy}"),
    "es_weekday": ("es", "{weekday}, {d} de {month} de {yyyy}"),
    "es_short": ("es", "{d} {mon} {yyyy}"),
    "num_slash": ("en", "{dd}/{mm}/{yyyy}"),
    "num_dot": ("en", "{d}.{m}.{yyyy}"),
    "num_dash": ("en", "{dd}-{mm}-{yyyy}"),
    "num_ymd_slash": ("en", "{yyyy}/{mm}/{dd}"),
    "num_compact": ("en", "{yyyy}{mm}{dd}"),
}
NUMERIC = [name for name in FORMATS if name.startswith("num_")]
FORMAT_MIXES = {
    "all": list(FORMATS),
    "english": [name for name in FORMATS if name.startswith("en_")] + NUMERIC,
    "numeric": NUMERIC,
    "words": [name for name in FORMATS if not name.startswith("num_")],
}
TOKENIZATIONS = ("char", "word", "word_digits")


def render(date: datetime.date, format_name: str) -> str:
    language, template = FORMATS[format_name]
    return template.format(**_fields(date, language))


def iso(date: datetime.date) -> str:
    return date.isoformat()


def tokenize(text: str, tokenization: str) -> list[str]:
    """Source tokens. 'char': every character. 'word': words, whole numbers and single punctuation marks.
    'word_digits': words whole, but every digit a token of its own."""
    if tokenization == "char":
        return list(text)
    if tokenization == "word":
        return re.findall(r"\d+|[^\W\d_]+|\S", text)
    if tokenization == "word_digits":
        return re.findall(r"\d|[^\W\d_]+|\S", text)
    raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")


@dataclass
class DatePairs:
    train: list[tuple[str, str, str]]   # (human-written date, ISO date, format name)
    val: list[tuple[str, str, str]]


def split_dates(seed: int, train_size: int, val_size: int) -> tuple[list[datetime.date], list[datetime.date]]:
    """Disjoint sets of calendar dates, drawn from a seeded shuffle of every date in the range."""
    days = (LAST_DATE - FIRST_DATE).days + 1
    if train_size + val_size > days:
        raise ValueError(f"train_size + val_size = {train_size + val_size} exceeds the {days} dates from "
                         f"{FIRST_DATE} to {LAST_DATE}")
    order = list(range(days))
    random.Random(seed).shuffle(order)
    dates = [FIRST_DATE + datetime.timedelta(days=offset) for offset in order[: train_size + val_size]]
    return dates[:train_size], dates[train_size:]


def generate(seed: int, train_size: int, val_size: int, train_mix: str = "all", val_mix: str = "all") -> DatePairs:
    """Pairs for both splits; each date gets one format drawn (seeded) from its split's mix."""
    for name, mix in (("train_mix", train_mix), ("val_mix", val_mix)):
        if mix not in FORMAT_MIXES:
            raise ValueError(f"{name} must be one of {sorted(FORMAT_MIXES)}, got {mix!r}")
    train_dates, val_dates = split_dates(seed, train_size, val_size)
    rng = random.Random(seed + 1)

    def pairs(dates, mix):
        formats = [rng.choice(FORMAT_MIXES[mix]) for _ in dates]
        return [(render(date, name), iso(date), name) for date, name in zip(dates, formats)]

    return DatePairs(train=pairs(train_dates, train_mix), val=pairs(val_dates, val_mix))
