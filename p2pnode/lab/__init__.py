"""The netns NAT lab: namespaces, routers of each NAT type, impairments (root only).

Why in the package: ``p2pnode demo`` runs its peers behind real NATs when it can,
and the package cannot import the tests. The layer sits beside the demo (it is
tooling and imports nothing of p2pnode); tests/harness/netns.py re-exports it for
the lab tests, scripts/lab drives it by hand. See docs/lab.md.
"""
