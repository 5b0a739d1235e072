"""`p2pnode relay` as an operator types it: bad options are one line and exit 2, before binding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.tls import make_certificates

BASE = ["--listen", "127.0.0.1:0", "--realm", "r", "--user", "alice:secret"]


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", "relay", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "127.0.0.1:0", "--realm", "r"], "give at least one --user"),
        ([*BASE, "--user", "nopassword"], "is not NAME:PASSWORD"),
        (["--listen", "0.0.0.0:0", "--realm", "r", "--user", "a:b"], "needs --relay-ip"),
        ([*BASE, "--ports", "9-1"], "is not a range"),
        ([*BASE, "--tls-listen", "127.0.0.1:0"], "--tls-listen needs --tls-cert"),
        ([*BASE, "--tls-cert", "cert.pem"], "--tls-cert and --tls-key need --tls-listen"),
        (
            [*BASE, "--tls-listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/cert.pem"],
            "TLS: /nonexistent/cert.pem: no such file",
        ),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = relay(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_certificates(tmp_path / "a"), make_certificates(tmp_path / "b")
    result = relay(
        *BASE,
        *("--tls-listen", "127.0.0.1:0", "--tls-cert", str(first.certificate)),
        *("--tls-key", str(second.key)),
    )
    assert result.returncode == 2, result
    assert "not a usable PEM certificate and matching private key" in result.stderr
    assert "Traceback" not in result.stderr
