"""p2pnode.records layer."""
