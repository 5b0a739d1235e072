"""p2pnode.connectivity layer."""
