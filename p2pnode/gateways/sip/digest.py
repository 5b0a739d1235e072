"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): MD5 and SHA-256.

Server side, the gateway:
- stores only HA1 hashes (``H(username:realm:password)``, one per algorithm),
  never passwords: :class:`StoredCredentials`;
- offers both challenges, SHA-256 first (RFC 8760 §2.4), always ``qop="auth"``;
- mints stateless nonces: ``issued-at || salt || HMAC(secret, issued-at || salt || realm)``,
  so a restart or a thousand concurrent registrations cost no memory, and an
  expired but authentic nonce yields ``stale=true`` (RFC 7616 §3.3) instead of
  a password failure;
- checks nc: within one nonce the nonce-count must strictly increase (replay
  refusal); the table of last counts is bounded (``MAX_TRACKED_NONCES``) and
  nonces expire, which bounds the window a forgotten entry leaves open.

Client side, :func:`authorization` answers a challenge (tests and the test UA).
Randomness and time are parameters: the caller passes ``now`` and cnonces.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.gateways.sip.grammar import quote
from p2pnode.gateways.sip.headers import AuthHeader

__all__ = [
    "DEFAULT_NONCE_LIFETIME",
    "MAX_TRACKED_NONCES",
    "Algorithm",
    "DigestServer",
    "Lookup",
    "StoredCredentials",
    "Verdict",
    "VerdictKind",
    "authorization",
    "ha1",
    "stored_credentials",
]

DEFAULT_NONCE_LIFETIME = 300.0  # seconds a nonce is accepted before stale=true
MAX_TRACKED_NONCES = 65_536  # nonce-count entries held; oldest forgotten first
_MAC_BYTES = 16
_SALT_BYTES = 8
_NONCE_CHARS = 43  # base64url of 8 (time) + 8 (salt) + 16 (MAC) bytes, unpadded
_NC_LENGTH = 8  # nc-value = 8LHEX


class Algorithm(enum.Enum):
    """RFC 7616 §3.3 / RFC 8760 algorithm names (non-session variants only)."""

    MD5 = "MD5"
    SHA256 = "SHA-256"

    def hash(self, text: str) -> str:
        data = text.encode("utf-8", "surrogateescape")
        if self is Algorithm.MD5:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: Algorithm) -> str:
    """HA1 = H(username ":" realm ":" password) (RFC 7616 §3.4.2)."""
    return algorithm.hash(f"{username}:{realm}:{password}")


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    """What the gateway keeps for an account: the HA1 of each algorithm, no password."""

    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str

    def ha1_for(self, algorithm: Algorithm) -> str:
        return self.ha1_md5 if algorithm is Algorithm.MD5 else self.ha1_sha256


def stored_credentials(username: str, realm: str, password: str) -> StoredCredentials:
    """Hash a new password into both HA1 forms (the password is not kept anywhere)."""
    return StoredCredentials(
        username,
        realm,
        ha1(username, realm, password, Algorithm.MD5),
        ha1(username, realm, password, Algorithm.SHA256),
    )


def _response(
    ha1_hex: str,
    algorithm: Algorithm,
    *,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str,
) -> str:
    # RFC 7616 §3.4.1: response = KD(H(A1), nonce:nc:cnonce:qop:H(A2)); A2 = Method:request-uri
    ha2 = algorithm.hash(f"{method}:{uri}")
    return algorithm.hash(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorization(
    challenge: AuthHeader,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The Authorization value answering a Digest ``challenge`` with qop=auth."""
    algorithm = Algorithm(challenge.get("algorithm") or "MD5")
    realm = challenge.get("realm") or ""
    nonce = challenge.get("nonce") or ""
    nc_text = f"{nc:08x}"
    response = _response(
        ha1(username, realm, password, algorithm),
        algorithm,
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc_text,
        cnonce=cnonce,
        qop="auth",
    )
    parts = [
        f"username={quote(username)}",
        f"realm={quote(realm)}",
        f"nonce={quote(nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        f"algorithm={algorithm.value}",
        f"cnonce={quote(cnonce)}",
        f"qop=auth, nc={nc_text}",
    ]
    opaque = challenge.get("opaque")
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    return "Digest " + ", ".join(parts)


Lookup = Callable[[str], "StoredCredentials | None"]


class VerdictKind(enum.Enum):
    OK = "ok"
    STALE = "stale"  # authentic nonce, expired: challenge again with stale=true
    FAILED = "failed"  # wrong password, unknown user, replay, malformed: plain challenge


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one set of credentials; ``reason`` is a fixed text for logs."""

    kind: VerdictKind
    reason: str
    username: str | None = None


class DigestServer:
    """Challenges and verifies digest credentials for one realm (sans-IO, bounded).

    ``lookup(username)`` returns the account's :class:`StoredCredentials` or
    None; an unknown user gets the same FAILED verdict as a wrong password, so
    the answer (a fresh 401) never tells a scanner which names exist.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
        randbytes: Callable[[int], bytes],
        algorithms: tuple[Algorithm, ...] = (Algorithm.SHA256, Algorithm.MD5),
    ) -> None:
        """``algorithms`` is the order of the challenges (RFC 8760 §2.4: preferred first).

        Measured: sipp 3.6.1 answers only the first challenge and refuses
        SHA-256, as some legacy phones do; such a deployment lists MD5 first.
        """
        if len(secret) < 16:
            raise ValueError("the nonce secret needs at least 16 bytes")
        if not algorithms:
            raise ValueError("offer at least one algorithm")
        self.algorithms = algorithms
        self.realm = realm
        self._secret = secret
        self._lifetime = nonce_lifetime
        self._max_tracked = max_tracked_nonces
        self._last_nc: OrderedDict[str, int] = OrderedDict()
        # Injected randomness (os.urandom in production, a seeded source in tests): two
        # challenges minted at the same instant must still differ, or their nonce
        # counts would collide.
        self._randbytes = randbytes

    # -- nonces ------------------------------------------------------------------
    def _mac(self, issued: bytes) -> bytes:
        mac = hmac.new(self._secret, issued + self.realm.encode(), hashlib.sha256)
        return mac.digest()[:_MAC_BYTES]

    def nonce(self, now: float) -> str:
        issued = struct.pack(">d", now) + self._randbytes(_SALT_BYTES)
        return base64.urlsafe_b64encode(issued + self._mac(issued)).decode().rstrip("=")

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since an authentic nonce was minted; None if it is not ours."""
        if len(nonce) != _NONCE_CHARS or not nonce.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        issued, mac = raw[: 8 + _SALT_BYTES], raw[8 + _SALT_BYTES :]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(issued)):
            return None
        (minted,) = struct.unpack(">d", issued[:8])
        age = now - minted
        return age if age >= 0 else None

    def challenges(self, now: float, *, stale: bool = False) -> tuple[str, ...]:
        """WWW-Authenticate values, one per algorithm in order, one nonce, qop="auth"."""
        nonce = self.nonce(now)
        tail = ", stale=true" if stale else ""
        return tuple(
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, "
            f'algorithm={algorithm.value}, qop="auth"{tail}'
            for algorithm in self.algorithms
        )

    # -- verification --------------------------------------------------------------
    def verify(
        self,
        credentials: AuthHeader,
        *,
        method: str,
        lookup: Lookup,
        now: float,
        request_uri: str | None = None,
    ) -> Verdict:
        """Check one Authorization value for a request with ``method``.

        ``request_uri``, when given, must equal the credentials' ``uri``
        (RFC 3261 §22.4 / RFC 7616 §3.4.6): credentials are not replayable
        against another target.
        """
        if credentials.scheme.lower() != "digest":
            return Verdict(VerdictKind.FAILED, "not digest")
        username = credentials.get("username")
        nonce = credentials.get("nonce")
        uri = credentials.get("uri")
        response = credentials.get("response")
        if username is None or nonce is None or uri is None or response is None:
            return Verdict(VerdictKind.FAILED, "missing digest parameter")
        if request_uri is not None and uri != request_uri:
            return Verdict(VerdictKind.FAILED, "uri mismatch", username)
        if credentials.get("realm") != self.realm:
            return Verdict(VerdictKind.FAILED, "wrong realm", username)
        try:
            algorithm = Algorithm(credentials.get("algorithm") or "MD5")
        except ValueError:
            return Verdict(VerdictKind.FAILED, "unsupported algorithm", username)
        if algorithm not in self.algorithms:
            return Verdict(VerdictKind.FAILED, "algorithm not offered", username)
        qop = credentials.get("qop")
        nc_text = credentials.get("nc")
        cnonce = credentials.get("cnonce")
        if qop != "auth" or nc_text is None or cnonce is None:
            return Verdict(VerdictKind.FAILED, "qop=auth with nc and cnonce required", username)
        if len(nc_text) != _NC_LENGTH or not all(c in "0123456789abcdefABCDEF" for c in nc_text):
            return Verdict(VerdictKind.FAILED, "malformed nc", username)
        age = self._nonce_age(nonce, now)
        if age is None:
            return Verdict(VerdictKind.FAILED, "nonce not issued here", username)
        stored = lookup(username)
        if stored is None:
            return Verdict(VerdictKind.FAILED, "wrong credentials", username)
        expected = _response(
            stored.ha1_for(algorithm),
            algorithm,
            method=method,
            uri=uri,
            nonce=nonce,
            nc=nc_text,
            cnonce=cnonce,
            qop=qop,
        )
        if not hmac.compare_digest(expected, response.lower()):
            return Verdict(VerdictKind.FAILED, "wrong credentials", username)
        if age > self._lifetime:
            # RFC 7616 §3.3: the right password with an old nonce: stale=true, no failure.
            return Verdict(VerdictKind.STALE, "nonce expired", username)
        nc = int(nc_text, 16)
        last = self._last_nc.get(nonce)
        if last is not None and nc <= last:
            return Verdict(VerdictKind.FAILED, "nonce count replayed", username)
        self._remember(nonce, nc)
        return Verdict(VerdictKind.OK, "ok", username)

    def _remember(self, nonce: str, nc: int) -> None:
        self._last_nc[nonce] = nc
        self._last_nc.move_to_end(nonce)
        while len(self._last_nc) > self._max_tracked:
            self._last_nc.popitem(last=False)

    @property
    def tracked_nonces(self) -> int:
        return len(self._last_nc)
