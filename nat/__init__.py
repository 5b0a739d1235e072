"""NAT traversal primitives: STUN, NAT behaviour discovery, reachability, hole punching.

Bottom layer of the house: imports neither ``relay`` nor ``p2pnode``.
"""
