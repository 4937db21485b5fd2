"""The generated dates: formats, languages, the ISO targets, the disjoint split and the tokenisations."""
from __future__ import annotations

import datetime

import pytest

from tritonprop.models import data_dates


@pytest.mark.parametrize("format_name, expected", [
    ("en_the_of", "the 1st of March 2021"),
    ("en_weekday", "Monday, March 1, 2021"),
    ("fr_weekday", "lundi 1er mars 2021"),
    ("de_weekday", "Montag, 1. März 2021"),
    ("es_weekday", "lunes, 1 de marzo de 2021"),
    ("num_slash", "01/03/2021"),
    ("num_dot", "1.3.2021"),
    ("num_compact", "20210301"),
])
def test_render(format_name, expected):
    assert data_dates.render(datetime.date(2021, 3, 1), format_name) == expected


@pytest.mark.parametrize("day, ordinal", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                          (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (31, "31st")])
def test_english_ordinal(day, ordinal):
    assert data_dates.english_ordinal(day) == ordinal


def test_every_written_date_means_one_iso_date():
    """No string is written for two dates, by any format: the task is exactly learnable."""
    meaning = {}
    day = datetime.date(1999, 1, 1)
    while day <= datetime.date(2000, 12, 31):
        for format_name in data_dates.FORMATS:
            text = data_dates.render(day, format_name)
            assert meaning.setdefault(text, day) == day, f"{text!r} means {meaning[text]} and {day}"
        day += datetime.timedelta(days=1)


def test_generate_is_deterministic_and_splits_share_no_date():
    first = data_dates.generate(3, 500, 100)
    assert first == data_dates.generate(3, 500, 100)
    assert first != data_dates.generate(4, 500, 100)
    train_dates = {iso for _, iso, _ in first.train}
    val_dates = {iso for _, iso, _ in first.val}
    assert len(train_dates) == 500 and len(val_dates) == 100
    assert not train_dates & val_dates
    for text, iso, format_name in first.train + first.val:
        assert data_dates.render(datetime.date.fromisoformat(iso), format_name) == text


def test_format_mixes_and_languages():
    pairs = data_dates.generate(0, 400, 400, train_mix="numeric", val_mix="all")
    assert {fmt for _, _, fmt in pairs.train} <= set(data_dates.NUMERIC)
    languages = {data_dates.FORMATS[fmt][0] for _, _, fmt in pairs.val if not fmt.startswith("num_")}
    assert languages == {"en", "fr", "de", "es"}
    with pytest.raises(ValueError, match="val_mix"):
        data_dates.generate(0, 10, 10, val_mix="klingon")


def test_split_larger_than_the_calendar_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        data_dates.generate(0, 80000, 1000)


def test_tokenizations():
    text = "the 21st of März 2021, 20210301"
    assert data_dates.tokenize(text, "char") == list(text)
    assert data_dates.tokenize(text, "word") == ["the", "21", "st", "of", "März", "2021", ",", "20210301"]
    assert data_dates.tokenize("21 März", "word_digits") == ["2", "1", "März"]
    with pytest.raises(ValueError, match="tokenization"):
        data_dates.tokenize(text, "bytes")
