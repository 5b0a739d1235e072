"""A sans-IO SIP core (RFC 3261): grammar, messages, parser, digest, transactions.

Layering inside this package follows the data: ``grammar`` (ABNF) ->
``message`` (frozen model) -> ``parser`` (framing, caps, serializer) ->
``digest`` / ``transaction``. Nothing here does I/O or reads the clock.
"""
