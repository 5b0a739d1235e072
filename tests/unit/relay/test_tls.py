"""The TURN-over-TLS server context: good files load, bad ones say which and why."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from relay.tls import TlsConfigError, server_context
from tests.harness.tls import make_certificates


def test_certificate_and_key_load_with_tls_1_2_at_least(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    context = server_context(files.certificate, files.key)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # TURN authenticates inside the tunnel


def test_combined_pem_needs_no_key_argument(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    combined = tmp_path / "both.pem"
    combined.write_bytes(files.certificate.read_bytes() + files.key.read_bytes())
    server_context(combined)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"nope\.pem: no such file"):
        server_context(tmp_path / "nope.pem")


def test_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_certificates(tmp_path / "a"), make_certificates(tmp_path / "b")
    with pytest.raises(TlsConfigError, match="not a usable PEM certificate"):
        server_context(first.certificate, second.key)


def test_garbage_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match=r"junk\.pem"):
        server_context(junk)
