"""The TLS server context for TURN over TLS (RFC 8656 §3.1).

TLS 1.2 or newer (RFC 8656 §3.1 asks for at least 1.2; older versions are
refused), the platform's default ciphers, no client certificates: TURN
authenticates clients with its own long-term or REST credentials inside the
tunnel. Bad files become one ``TlsConfigError`` that says which file and why.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsConfigError", "server_context"]


class TlsConfigError(ValueError):
    """A certificate or key that cannot serve TLS."""


def server_context(certificate: Path, key: Path | None = None) -> ssl.SSLContext:
    """A server context from a PEM certificate chain and its private key (``key``
    defaults to the certificate file, for a combined PEM)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    for path in (certificate, key):
        if path is not None and not path.is_file():
            raise TlsConfigError(f"{path}: no such file")
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as error:
        raise TlsConfigError(
            f"{certificate}{f' / {key}' if key else ''}: not a usable PEM certificate and "
            f"matching private key ({error.reason or error})"
        ) from None
    except OSError as error:
        raise TlsConfigError(f"{certificate}: {error.strerror or error}") from None
    return context
