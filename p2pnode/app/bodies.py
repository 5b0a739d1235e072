"""Reading a bounded HTTP request body, and a JSON one into a pydantic model: one rule.

Why one place: ``StreamReader.read(n)`` returns what has arrived, *up to* n bytes,
so a body that arrives in several segments was read short by each route that read
it once: an 18 KB body over an 8 KB limit came back as invalid JSON (400) instead
of too large (413), depending on timing. Every route (control API, peer API, the
page's ``/app/*`` routes and its proxy) reads through here, and each turns the
refusal into its own error type with ``refuse(status, error, detail)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pydantic
from aiohttp import web

__all__ = ["read_capped", "read_model"]

T = TypeVar("T", bound=pydantic.BaseModel)


async def read_capped(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is (or announces itself) longer than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return None
    raw = bytearray()
    while len(raw) <= limit:
        chunk = await request.content.read(limit + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    return None if len(raw) > limit else bytes(raw)


async def read_model(
    request: web.Request,
    model: type[T],
    limit: int,
    refuse: Callable[[int, str, str], Exception],
) -> T:
    """The body as ``model``; ``refuse(413, ...)`` over ``limit``, ``refuse(400, ...)`` invalid.

    The 400's detail names the field and pydantic's message, never the value sent.
    """
    raw = await read_capped(request, limit)
    if raw is None:
        raise refuse(413, "body too large", "")
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise refuse(400, "invalid request", f"{where}: {first['msg']}") from None
