"""p2pnode.directory layer."""
