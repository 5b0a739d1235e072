"""ENUM NAPTR grammar: services, RFC 3402 substitution expressions, directives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.directory.naptr import (
    NaptrDirective,
    NaptrError,
    format_enumer_directive,
    parse_enumer_directive,
    parse_service,
    parse_substitution,
    sip_directive,
)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("E2U+sip", "E2U+sip"),
        ("e2u+SIP", "E2U+sip"),
        ("E2U+voice:sip", "E2U+voice:sip"),
        ("E2U+tel", "E2U+tel"),
        ("E2U+sip+tel", "E2U+sip+tel"),
        ("E2U+email:mailto", "E2U+email:mailto"),
    ],
)
def test_services(text: str, canonical: str) -> None:
    assert parse_service(text) == canonical


@pytest.mark.parametrize(
    "text", ["sip+E2U", "E2U", "E2U+", "E2U+sip:", "E2U+s_p", "E2U+" + "a" * 33]
)
def test_bad_services(text: str) -> None:
    with pytest.raises(NaptrError):
        parse_service(text)


@pytest.mark.parametrize(
    ("regexp", "aus", "result"),
    [
        ("!^.*$!sip:info@example.com!", "+18009359935", "sip:info@example.com"),
        (
            "!^(.*)$!sip:\\1@tollfree.example.com!",
            "+18009359935",
            "sip:+18009359935@tollfree.example.com",
        ),
        ("!^\\+?441865332(.*)$!sip:\\1@nominet.org.uk!", "+441865332123", "sip:123@nominet.org.uk"),
        ("!^\\+1(800)([0-9]{7})$!sip:\\2@\\1.example!", "+18009359935", "sip:9359935@800.example"),
        ("!^\\+([[:digit:]]+)$!tel:+\\1!", "+18009359935", "tel:+18009359935"),
        ("!^\\+(\\d+)$!sip:\\1\\!x@h!", "+18009359935", "sip:18009359935!x@h"),
        ("!^\\+(\\d+)$!sip:a\\\\b@h!", "+1", "sip:a\\b@h"),
        ("!^\\+44!sip:uk@h!", "+18009359935", None),
        ("!(9)|(8)!\\1-\\2!", "+18", "+1-8"),  # a group that did not take part is empty
        ("!9935$!X!i", "+18009359935", "+1800935X"),  # only the match is replaced (sed style)
    ],
)
def test_substitution(regexp: str, aus: str, result: str | None) -> None:
    assert parse_substitution(regexp).apply(aus) == result


@pytest.mark.parametrize(
    "regexp",
    [
        "/^.*$/sip:a@b/",  # only the "!" delimiter in our subset
        "!^.*$!sip:a@b",  # unterminated
        "!^(.*)$!sip:\\2@b!",  # back-reference to a missing group
        "!^(.*)$!sip:\\0@b!",  # \0 is not a back-reference (POS-DIGIT)
        "!^(?P<x>.*)$!x!",  # Python extension, not ERE
        "!^\\w+$!x!",  # escape outside the ERE subset
        "!^[[:nope:]]$!x!",
        "!^[0-9$!x!",
        "!!x!",
        "!a!!",
        "!(!x!",
        "!a!x!g",
        "!^.*$!sip:" + "a" * 260 + "!",
    ],
)
def test_bad_substitutions(regexp: str) -> None:
    with pytest.raises(NaptrError):
        parse_substitution(regexp)


def test_directive_validation_and_uri() -> None:
    directive = sip_directive("sip:alice@pbx.example.com")
    assert directive == NaptrDirective(100, 10, "u", "E2U+sip", "!^.*$!sip:alice@pbx.example.com!")
    assert directive.uri_for("+18009359935") == "sip:alice@pbx.example.com"
    assert directive.enumservices == ("sip",)
    for bad in (
        {"order": 70000},
        {"preference": -1},
        {"flags": "s"},
        {"flags": "U"},
        {"service": "e2u+sip"},
        {"regexp": "!x"},
    ):
        fields = {
            "order": 1,
            "preference": 1,
            "flags": "u",
            "service": "E2U+sip",
            "regexp": "!a!b!",
        }
        fields.update(bad)
        with pytest.raises(NaptrError):
            NaptrDirective(**fields)  # type: ignore[arg-type]
    with pytest.raises(NaptrError):
        sip_directive("http://x")
    assert sip_directive("sip:a!b@h").uri_for("+1") == "sip:a!b@h"


def test_enumer_line_form() -> None:
    line = "E2U+sip=100|10|!^(.*)$!sip:17772325555@in.callcentric.com!"
    directive = parse_enumer_directive(line)
    assert directive.order == 100 and directive.preference == 10
    assert format_enumer_directive(directive) == line
    with pytest.raises(NaptrError):
        parse_enumer_directive("E2U+sip=100|10")


@given(st.text(max_size=80))
def test_substitution_parser_is_total(text: str) -> None:
    try:
        expression = parse_substitution(text)
    except NaptrError:
        return
    expression.apply("+18009359935")


@given(st.text(alphabet="!\\^$.*+?()[]{}|:0123456789abdi-", max_size=40))
def test_substitution_parser_is_total_on_regex_alphabet(text: str) -> None:
    try:
        expression = parse_substitution("!" + text)
    except NaptrError:
        return
    expression.apply("+18009359935")
