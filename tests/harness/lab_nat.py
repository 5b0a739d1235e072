"""nftables rule sets for each NAT type: re-exported from ``p2pnode.lab.nat``, where they live."""

from __future__ import annotations

from p2pnode.lab.nat import NatType, loss_ruleset, router_ruleset

__all__ = ["NatType", "loss_ruleset", "router_ruleset"]
