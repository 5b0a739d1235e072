"""CreatePermission and ChannelBind (RFC 8656 §9.2, §11.2) on one allocation.

Both install permissions and share the peer checks (family 443, policy 403) and
the permission quota, so they live together, apart from the Allocate path. Each
returns the refusal code or None; ``before_change`` runs just before the
allocation is modified so the caller can forget forwarding routes first (the
fast path must never outlive what it caches).
"""

from __future__ import annotations

from collections.abc import Callable

from nat.stun import AddressFamily, ChannelNumber, StunMessage, XorPeerAddress
from relay.allocation import Allocation, BindResult
from relay.channeldata import CHANNEL_MIN
from relay.messages import TurnErrorCode
from relay.policy import PeerAddressPolicy
from relay.quota import QuotaConfig
from relay.requests import address_family

__all__ = ["channel_bind", "create_permission", "peer_refusal"]

Address = tuple[str, int]


def peer_refusal(
    peer: Address, family: AddressFamily, policy: PeerAddressPolicy
) -> TurnErrorCode | None:
    """Shared by CreatePermission and ChannelBind: family (443), then policy (403)."""
    if address_family(peer[0]) != family:
        return TurnErrorCode.PEER_ADDRESS_FAMILY_MISMATCH
    if not policy.permits(peer[0]):
        # RFC 8656 §9.2: "the server MAY ... reject with 403 (Forbidden) ... if
        # the server's policy does not allow" this peer (coturn CVE-2020-26262).
        return TurnErrorCode.FORBIDDEN
    return None


def create_permission(
    allocation: Allocation,
    message: StunMessage,
    now: float,
    *,
    family: AddressFamily,
    policy: PeerAddressPolicy,
    quota: QuotaConfig,
    before_change: Callable[[], None],
) -> TurnErrorCode | None:
    """RFC 8656 §9.2 on a live allocation: install or refresh all permissions, or none."""
    peers = message.get_all(XorPeerAddress)
    if not peers:
        # "at least one XOR-PEER-ADDRESS attribute ... If not, 400".
        return TurnErrorCode.BAD_REQUEST
    for peer in peers:
        refused = peer_refusal(peer.address, family, policy)
        if refused is not None:
            return refused  # "either install or refresh all permissions, or none"
    ips = {peer.address[0] for peer in peers}
    if not allocation.can_add_permissions(ips, now, quota.max_permissions_per_allocation):
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    before_change()
    for ip in ips:
        allocation.install_permission(ip, now)
    return None


def channel_bind(
    allocation: Allocation,
    message: StunMessage,
    now: float,
    *,
    family: AddressFamily,
    policy: PeerAddressPolicy,
    quota: QuotaConfig,
    channel_max: int,
    before_change: Callable[[], None],
) -> TurnErrorCode | None:
    """RFC 8656 §11.2 on a live allocation: bind (or refresh) a channel to a peer."""
    channel = message.get(ChannelNumber)
    peer_attribute = message.get(XorPeerAddress)
    if channel is None or peer_attribute is None:
        return TurnErrorCode.BAD_REQUEST
    if not CHANNEL_MIN <= channel.number <= channel_max:
        # "The request contains both a CHANNEL-NUMBER and an XOR-PEER-ADDRESS
        # attribute ... the channel number is in the range 0x4000 through 0x4FFF".
        return TurnErrorCode.BAD_REQUEST
    peer = peer_attribute.address
    refused = peer_refusal(peer, family, policy)
    if refused is not None:
        return refused
    if not allocation.can_add_permissions({peer[0]}, now, quota.max_permissions_per_allocation):
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    before_change()
    result = allocation.bind_channel(channel.number, peer, now, quota.max_channels_per_allocation)
    if result is BindResult.FULL:
        return TurnErrorCode.INSUFFICIENT_CAPACITY
    if result is not BindResult.OK:
        # "The channel number is not currently bound to a different transport address
        # (same transport address is OK); the transport address is not currently bound
        # to a different channel number" - else 400.
        return TurnErrorCode.BAD_REQUEST
    # "In addition, the server MUST install or refresh a permission for the IP
    # address contained in the XOR-PEER-ADDRESS attribute".
    allocation.install_permission(peer[0], now)
    return None
