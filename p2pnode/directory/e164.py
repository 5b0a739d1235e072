"""E.164 numbers: normalise what people type, and map numbers to and from ENUM names.

Invariants:
- A number that leaves this module is the canonical E.164 string ``+<digits>``
  that libphonenumber (``phonenumbers``) considers a *valid* individual number.
  Ranges, wildcards, extensions and vanity letters are refused: ENUM here maps
  single numbers only (the ENUMER lesson: one record must never grab a block).
- RFC 6116 §2.4 (the "AUS" to domain algorithm) lives here too, so the DNS
  gateway and the CLI agree on it.
"""

from __future__ import annotations

import re

import phonenumbers

__all__ = [
    "MAX_E164_DIGITS",
    "E164Error",
    "digits_from_enum_labels",
    "enum_labels",
    "normalise_country",
    "normalise_e164",
    "parse_e164",
]

MAX_E164_DIGITS = 15  # ITU-T E.164 §6: at most 15 digits after the "+"
_MAX_INPUT_CHARS = 40
# What a person may type: digits, a leading "+", and visual separators.
_TYPED = re.compile(r"\+?[0-9 ().\-/]+")
_CANONICAL = re.compile(r"\+[1-9][0-9]{1,14}")
_NANP_REGIONS_PREFIX = "011"


class E164Error(ValueError):
    """The text is not one valid, individual telephone number."""


def _checked(number: phonenumbers.PhoneNumber, text: str) -> str:
    if number.extension:
        raise E164Error(f"{text!r}: extensions are not part of an E.164 number")
    if not phonenumbers.is_valid_number(number):
        raise E164Error(f"{text!r} is not a valid telephone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_country(text: str) -> str:
    """An ISO 3166 alpha-2 region libphonenumber knows (``us`` -> ``US``), else ``E164Error``."""
    region = text.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise E164Error(
            f"{text!r} is not a country code libphonenumber knows (two letters, e.g. US)"
        )
    return region


def normalise_e164(text: str, default_country: str | None = None) -> str:
    """Canonical ``+<digits>`` for a typed number in E.164, ``00``/``011`` or national form.

    ``default_country`` (ISO 3166 alpha-2, e.g. ``"US"``) interprets national
    forms and the country's own international prefix; without it only ``+``
    and ``00`` forms are understood.
    """
    stripped = text.strip()
    if not stripped or len(stripped) > _MAX_INPUT_CHARS:
        raise E164Error(f"{text!r} is not a telephone number")
    if _TYPED.fullmatch(stripped) is None:
        raise E164Error(
            f"{text!r}: only digits, a leading '+' and separators are allowed "
            "(no ranges, wildcards, letters or extensions)"
        )
    compact = re.sub(r"[ ().\-/]", "", stripped)
    if not compact.lstrip("+"):
        raise E164Error(f"{text!r} is not a telephone number")
    region = default_country.upper() if default_country else None
    candidates = [compact]
    # "00" is the international prefix nearly everywhere (ITU-T E.164 Annex A);
    # "011" only inside the NANP, which libphonenumber handles from the region.
    if compact.startswith("00"):
        candidates.append("+" + compact[2:])
    if compact.startswith(_NANP_REGIONS_PREFIX) and region in (None, "US", "CA"):
        candidates.append("+" + compact[3:])
    last_error: E164Error | None = None
    for candidate in candidates:
        if not candidate.startswith("+") and region is None:
            last_error = E164Error(
                f"{text!r} is in national form: give it with '+' or set a default country"
            )
            continue
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException as error:
            last_error = E164Error(f"{text!r} is not a telephone number ({error})")
            continue
        try:
            return _checked(parsed, text)
        except E164Error as error:
            last_error = error
    assert last_error is not None
    raise last_error


def parse_e164(text: str) -> str:
    """Accept only an already canonical, valid ``+<digits>`` (for records off the wire)."""
    if _CANONICAL.fullmatch(text) is None:
        raise E164Error(f"{text!r} is not a canonical E.164 number (+ and 2-15 digits)")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as error:
        raise E164Error(f"{text!r} is not a telephone number ({error})") from None
    canonical = _checked(parsed, text)
    if canonical != text:
        raise E164Error(f"{text!r} is not in canonical form ({canonical})")
    return canonical


def enum_labels(number: str) -> tuple[str, ...]:
    """RFC 6116 §2.4 steps 2-4: the digits, reversed, one label each (zone not included)."""
    # step 2: "Remove all characters with the exception of the digits"
    # step 3: "Put dots ('.') between each digit"; step 4: "Reverse the order of the digits"
    return tuple(reversed(number.lstrip("+")))


def digits_from_enum_labels(labels: tuple[str, ...]) -> str | None:
    """``+<digits>`` from the labels left of an ENUM zone, dotted or ENUMER's undotted form.

    Dotted: one digit per label, reversed (``5.3.9.9.5.3.9.0.0.8.1``). Undotted:
    one label of reversed digits (``53995390081``). ``None`` if neither.
    """
    if not labels or len(labels) > MAX_E164_DIGITS:
        return None
    if len(labels) == 1:
        label = labels[0]
        if not (1 <= len(label) <= MAX_E164_DIGITS) or not label.isascii() or not label.isdigit():
            return None
        return "+" + label[::-1]
    if any(len(label) != 1 or label not in "0123456789" for label in labels):
        return None
    return "+" + "".join(reversed(labels))
