"""p2pnode.sessions layer."""
