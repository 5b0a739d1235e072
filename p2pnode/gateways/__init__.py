"""p2pnode.gateways layer."""
