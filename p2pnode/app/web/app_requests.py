"""How an ``/app/*`` route reads its request and refuses one: one body rule, one error.

Split out of ``server`` so that route groups in their own modules (``sip_routes``)
answer exactly as the server's own routes do: a body is read up to its limit
(``MAX_APP_BODY`` unless told) and validated by a pydantic model, and every
refusal is an ``AppError`` that the server's guard turns into
``{"error", "detail"}`` with its status, in one place. The detail names the field
and pydantic's message, never the value sent.
"""

from __future__ import annotations

from typing import TypeVar

import pydantic
from aiohttp import web

from p2pnode.app.bodies import read_model

__all__ = ["MAX_APP_BODY", "AppError", "read_body"]

MAX_APP_BODY = 8 * 1024  # bodies of /app/* requests at most

T = TypeVar("T", bound=pydantic.BaseModel)


class AppError(Exception):
    """A refusal of an ``/app/*`` request: status, short error, detail for a person."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


async def read_body(request: web.Request, model: type[T], limit: int = MAX_APP_BODY) -> T:
    """The request's body as ``model``; ``AppError`` 413 over ``limit``, 400 invalid."""
    return await read_model(request, model, limit, AppError)
