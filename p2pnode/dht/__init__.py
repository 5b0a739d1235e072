"""p2pnode.dht layer."""
