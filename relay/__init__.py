"""Relay role: a TURN server (RFC 8656) and the supernode promotion state machine.

Imports ``nat`` only; identity, quotas and auth come in as injected policy callables.
"""
