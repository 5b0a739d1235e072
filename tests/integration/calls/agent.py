"""One call peer in its own process (a lab namespace), signalling over stdin/stdout JSON lines.

The test process is the signalling channel: it copies ``{"signal": ...}``
lines from one agent's stdout to the other's stdin (as the sealed envelopes of
the connectivity layer would). The agent prints ``{"update": ...}`` for every
call update and ``{"done": ...}`` with its statistics at the end.

    python -m tests.integration.calls.agent CONFIG_JSON

CONFIG_JSON: {"me", "peer", "dial": bool, "tone": Hz, "record": path,
"seconds": call length after the first frame (caller), "paths": [{"name",
"relay_only", "servers": [[url, user, password], ...]}], "codecs": [...],
"loopback": bool}
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from p2pnode.sessions.call import CallState
from p2pnode.sessions.calls import CallConfig, CallMedia, CallService, IceServer, MediaPath
from p2pnode.sessions.media import ToneSource

ENDED = {
    CallState.DECLINED,
    CallState.BUSY,
    CallState.NO_ANSWER,
    CallState.CANCELLED,
    CallState.HUNG_UP,
    CallState.REFUSED,
    CallState.SUPERSEDED,
    CallState.FAILED,
}


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def parse_paths(raw: list[dict[str, Any]]) -> tuple[MediaPath, ...]:
    return tuple(
        MediaPath(
            tuple(IceServer(url, user, password) for url, user, password in path["servers"]),
            relay_only=bool(path.get("relay_only", False)),
            name=str(path.get("name", "path")),
        )
        for path in raw
    )


async def main(config: dict[str, Any]) -> None:
    if config.get("loopback"):
        import aioice.ice

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    loop = asyncio.get_running_loop()

    async def send(peer: str, payload: bytes) -> None:
        emit(signal=base64.b64encode(payload).decode(), to=peer)

    media = CallMedia(ToneSource(float(config["tone"])), Path(config["record"]))
    call_config = CallConfig(
        paths=parse_paths(config["paths"]),
        audio_codecs=tuple(config.get("codecs", ("opus",))),
        auto_answer=not config["dial"],
        warm=bool(config.get("warm", False)),
    )
    async with CallService(config["me"], call_config, send, answer_media=lambda: media) as calls:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def read_signals() -> None:
            while line := await reader.readline():
                message = json.loads(line)
                if "signal" in message:
                    await calls.handle_signal(message["from"], base64.b64decode(message["signal"]))
                elif message.get("command") == "hangup":
                    for call_id in list(calls_seen):
                        with contextlib.suppress(Exception):
                            await calls.hangup(call_id)

        calls_seen: set[bytes] = set()
        if call_config.warm:  # gathered ahead of the call: wait for it, then say so
            role = "offer" if config["dial"] else "answer"
            async with asyncio.timeout(30):
                while not calls.warm_ready(role):  # noqa: ASYNC110 (a flag, no event)
                    await asyncio.sleep(0.02)
            emit(ready=role)
        async with asyncio.TaskGroup() as tasks:
            signals = tasks.create_task(read_signals())
            started = time.monotonic()
            if config["dial"]:
                call_id = await calls.dial(config["peer"], media)
                calls_seen.add(call_id)
            last = None
            async with asyncio.timeout(float(config.get("limit", 60))):
                while True:
                    update = await calls.wait_update()
                    calls_seen.add(update.call_id)
                    last = update
                    emit(
                        update=update.state.value,
                        path=update.path,
                        codec=update.codec,
                        detail=update.detail,
                        t=time.monotonic() - started,
                    )
                    if update.detail == "first audio frame" and config["dial"]:
                        tasks.create_task(hang_up_later(calls, update.call_id, config))
                    if update.state in ENDED:
                        break
            assert last is not None
            stats = calls.statistics(last.call_id)
            emit(
                done=last.state.value,
                frames=stats.frames,
                failovers=stats.failovers,
                generation=stats.generation,
                codec=stats.codec,
                setup_s=None if stats.first_frame_at is None else stats.first_frame_at - started,
            )
            signals.cancel()


async def plain_main(config: dict[str, Any]) -> None:
    """The benchmark's anchor: bare aiortc, SDP over the same pipe, no call service."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    from p2pnode.sessions.media import SourceTrack

    if config.get("loopback"):
        import aioice.ice

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    path = parse_paths(config["paths"])[0]
    pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(s.url, s.username, s.credential) for s in path.servers]
        )
    )
    heard = asyncio.Event()
    frames = 0

    async def receive(track: Any) -> None:
        nonlocal frames
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                frames += 1
                heard.set()

    receivers: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: receivers.append(asyncio.ensure_future(receive(track))))

    async def next_signal() -> dict[str, Any]:
        line = await reader.readline()
        message: dict[str, Any] = json.loads(base64.b64decode(json.loads(line)["signal"]))
        return message

    def send(message: dict[str, Any]) -> None:
        emit(signal=base64.b64encode(json.dumps(message).encode()).decode(), to=config["peer"])

    started = time.monotonic()
    track = SourceTrack(ToneSource(float(config["tone"])))
    if config["dial"]:
        pc.addTransceiver(track, direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        send({"sdp": pc.localDescription.sdp, "type": "offer"})
        answer = await next_signal()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await asyncio.wait_for(heard.wait(), 30)
        setup = time.monotonic() - started
        await asyncio.sleep(float(config.get("seconds", 0.5)))
        send({"type": "bye"})
    else:
        offer = await next_signal()
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        pc.addTrack(track)
        await pc.setLocalDescription(await pc.createAnswer())
        send({"sdp": pc.localDescription.sdp, "type": "answer"})
        await asyncio.wait_for(heard.wait(), 30)
        setup = time.monotonic() - started
        await asyncio.wait_for(next_signal(), 60)
    for receiver in receivers:
        receiver.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pc.close(), 2.0)
    emit(done="hung-up", frames=frames, failovers=0, generation=0, codec=None, setup_s=setup)


async def hang_up_later(calls: CallService, call_id: bytes, config: dict[str, Any]) -> None:
    await asyncio.sleep(float(config.get("seconds", 3.0)))
    await calls.hangup(call_id)


if __name__ == "__main__":
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(relativeCreated)6.0f %(name)s %(message)s",
    )
    logging.getLogger("p2pnode").setLevel(logging.INFO)
    arguments = json.loads(sys.argv[1])
    asyncio.run(plain_main(arguments) if arguments.get("plain") else main(arguments))
