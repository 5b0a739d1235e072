"""Signed, expiring, sequence-numbered records: the only data the DHT carries.

codec (wire form) -> kinds (keys, lifetimes) -> policy (the acceptance function).
"""

from p2pnode.records.codec import (
    FORMAT_VERSION,
    MAX_RECORD_BYTES,
    RecordDecodeError,
    SignedRecord,
    decode_record,
    encode_record,
    sign_record,
    signature_valid,
)
from p2pnode.records.kinds import (
    CONTESTED_KINDS,
    KEY_BYTES,
    MAX_TTL_BY_KIND,
    RecordKind,
    record_key,
)
from p2pnode.records.policy import (
    MAX_CLOCK_SKEW,
    Accepted,
    Rejected,
    RejectReason,
    Verdict,
    accept,
    supersedes,
)

__all__ = [
    "CONTESTED_KINDS",
    "FORMAT_VERSION",
    "KEY_BYTES",
    "MAX_CLOCK_SKEW",
    "MAX_RECORD_BYTES",
    "MAX_TTL_BY_KIND",
    "Accepted",
    "RecordDecodeError",
    "RecordKind",
    "RejectReason",
    "Rejected",
    "SignedRecord",
    "Verdict",
    "accept",
    "decode_record",
    "encode_record",
    "record_key",
    "sign_record",
    "signature_valid",
    "supersedes",
]
