"""p2pnode.app layer."""
