"""The directory's settings file, ``<home>/directory.toml``: default country, trust, toll-free.

Example::

    country = "US"                      # how national numbers are read
    trust = ["<verifier peer id>", ...] # verifiers whose countersignatures count
    tollfree_file = "/etc/p2pnode/tollfree.txt"
    bootstrap = ["192.0.2.10:4000"]

Command-line options add to (trust, bootstrap) or override (country, toll-free) it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from p2pnode.directory.e164 import E164Error, normalise_country
from p2pnode.identity import public_key_from_peer_id

__all__ = ["SETTINGS_FILE", "DirectorySettings", "SettingsError", "load_settings", "parse_settings"]

SETTINGS_FILE = "directory.toml"
_MAX_BYTES = 64 * 1024


class SettingsError(ValueError):
    """The settings file is not valid TOML or has a field of the wrong shape."""


@dataclass(frozen=True)
class DirectorySettings:
    country: str | None = None
    trust: frozenset[bytes] = frozenset()
    tollfree_file: Path | None = None
    bootstrap: tuple[str, ...] = ()


def parse_settings(text: str, *, source: str = SETTINGS_FILE) -> DirectorySettings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{source}: {error}") from None
    unknown = set(data) - {"country", "trust", "tollfree_file", "bootstrap"}
    if unknown:
        raise SettingsError(f"{source}: unknown settings {sorted(unknown)}")
    country = data.get("country")
    if country is not None:
        if not isinstance(country, str):
            raise SettingsError(f'{source}: country must be a two-letter code such as "US"')
        try:
            country = normalise_country(country)
        except E164Error as error:
            raise SettingsError(f"{source}: country: {error}") from None
    trust: set[bytes] = set()
    for entry in _strings(data.get("trust", []), "trust", source):
        try:
            trust.add(public_key_from_peer_id(entry))
        except ValueError as error:
            raise SettingsError(f"{source}: trust: {error}") from None
    tollfree = data.get("tollfree_file")
    if tollfree is not None and not isinstance(tollfree, str):
        raise SettingsError(f"{source}: tollfree_file must be a path string")
    return DirectorySettings(
        country=country,
        trust=frozenset(trust),
        tollfree_file=Path(tollfree) if tollfree else None,
        bootstrap=tuple(_strings(data.get("bootstrap", []), "bootstrap", source)),
    )


def _strings(value: object, name: str, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{source}: {name} must be a list of strings")
    return [str(v) for v in value]


def load_settings(home: Path) -> DirectorySettings:
    """The settings in ``home`` (defaults if there is no file)."""
    path = home / SETTINGS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return DirectorySettings()
    except OSError as error:
        raise SettingsError(f"cannot read {path}: {error}") from None
    if len(raw) > _MAX_BYTES:
        raise SettingsError(f"{path} is larger than {_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{path} is not UTF-8") from None
    return parse_settings(text, source=str(path))
