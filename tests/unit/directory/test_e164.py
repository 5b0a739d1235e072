"""E.164 normalisation and ENUM name mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.directory.e164 import (
    E164Error,
    digits_from_enum_labels,
    enum_labels,
    normalise_country,
    normalise_e164,
    parse_e164,
)


@pytest.mark.parametrize(
    ("text", "country", "expected"),
    [
        ("+1 800 935 9935", None, "+18009359935"),
        ("+1 (800) 935-9935", "DE", "+18009359935"),
        ("0018009359935", "DE", "+18009359935"),
        ("0018009359935", None, "+18009359935"),
        ("0018009359935", "US", "+18009359935"),
        ("01118009359935", "US", "+18009359935"),
        ("800 935 9935", "US", "+18009359935"),
        ("030 1234567", "DE", "+49301234567"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("+44 20 7946 0018", "US", "+442079460018"),
    ],
)
def test_normalises_typed_forms(text: str, country: str | None, expected: str) -> None:
    assert normalise_e164(text, country) == expected


@pytest.mark.parametrize(
    ("text", "country", "fragment"),
    [
        ("+1800*", None, "no ranges, wildcards"),
        ("+1 800 935 99XX", None, "no ranges"),
        ("+1 800 FLOWERS", None, "no ranges"),
        ("+1800935993[0-9]", None, "no ranges"),
        ("+1 800 935 9935 ext 12", None, "no ranges"),
        ("8009359935", None, "national form"),
        ("+1800", None, "not a valid"),
        ("+15555550100", None, "not a valid"),
        ("", "US", "not a telephone number"),
        ("+", "US", "only digits"),
        ("1" * 60, "US", "not a telephone number"),
    ],
)
def test_rejects_ranges_wildcards_and_invalid(
    text: str, country: str | None, fragment: str
) -> None:
    with pytest.raises(E164Error, match=fragment):
        normalise_e164(text, country)


def test_parse_e164_accepts_only_canonical() -> None:
    assert parse_e164("+18009359935") == "+18009359935"
    for bad in ("18009359935", "+1 8009359935", "+018009359935", "+15555550100", "+1800"):
        with pytest.raises(E164Error):
            parse_e164(bad)


def test_rfc6116_example_labels() -> None:
    # RFC 6116 §2.4 worked example: +442079460148 -> 8.4.1.0.6.4.9.7.0.2.4.4.e164.arpa
    assert ".".join(enum_labels("+442079460148")) == "8.4.1.0.6.4.9.7.0.2.4.4"


def test_dotted_and_undotted_forms() -> None:
    assert digits_from_enum_labels(tuple("53995390081")) == "+18009359935"
    assert digits_from_enum_labels(("53995390081",)) == "+18009359935"  # ENUMER's form
    assert digits_from_enum_labels(()) is None
    assert digits_from_enum_labels(("5", "x")) is None
    assert digits_from_enum_labels(("53", "9")) is None
    assert digits_from_enum_labels(("1" * 16,)) is None
    assert digits_from_enum_labels(("١٢٣",)) is None  # non-ASCII digits are not digits here


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_labels_round_trip(number: str) -> None:
    assert digits_from_enum_labels(enum_labels(number)) == number
    assert digits_from_enum_labels(("".join(enum_labels(number)),)) == number


@given(st.text(max_size=50), st.sampled_from([None, "US", "DE", "GB"]))
def test_normalise_is_total(text: str, country: str | None) -> None:
    try:
        result = normalise_e164(text, country)
    except E164Error:
        return
    assert parse_e164(result) == result


def test_country_codes() -> None:
    assert normalise_country(" de ") == "DE"
    for bad in ("ZZ", "USA", "1", "", "001"):
        with pytest.raises(E164Error, match="country code"):
            normalise_country(bad)
