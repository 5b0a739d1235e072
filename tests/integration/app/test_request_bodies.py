"""A request body that arrives in pieces is read whole (p2pnode/app/bodies.py).

Every HTTP surface read its body with one ``StreamReader.read(limit + 1)``, which
returns what has arrived: a body sent in several segments was judged on its first
piece (an 18 KB body over an 8 KB limit came back 400 "invalid request" instead of
413, depending on timing). Here the client sends its body in slow chunks on a real
loopback socket, so the short read is what would happen without the loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pydantic
from aiohttp import web

from p2pnode.app.bodies import read_model

LIMIT = 8 * 1024


class Offer(pydantic.BaseModel):
    sdp: str


class RefusedError(Exception):
    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error


async def handler(request: web.Request) -> web.Response:
    try:
        body = await read_model(request, Offer, LIMIT, RefusedError)
    except RefusedError as refused:
        return web.json_response({"error": refused.error}, status=refused.status)
    return web.json_response({"length": len(body.sdp)})


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0.01)  # each piece in its own segment: the server reads between


async def post_in_pieces(url: str, data: bytes) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=pieces(data, 1024)) as response,  # chunked
    ):
        return response.status, json.loads(await response.text())


async def scenario() -> None:
    app = web.Application()
    app.router.add_post("/offer", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/offer"
        fits = json.dumps({"sdp": "v=0" * 2000}).encode()  # ~6 KB in six pieces
        assert len(fits) < LIMIT
        assert await post_in_pieces(url, fits) == (200, {"length": 6000})
        too_big = json.dumps({"sdp": "\u00e9" * 9000}, ensure_ascii=False).encode()
        assert len(too_big) > LIMIT
        assert await post_in_pieces(url, too_big) == (413, {"error": "body too large"})
        broken = fits[:-1]  # whole, but not JSON: invalid, not "too large"
        assert await post_in_pieces(url, broken) == (400, {"error": "invalid request"})
    finally:
        await runner.cleanup()


def test_a_body_in_pieces_is_read_whole() -> None:
    asyncio.run(scenario())
