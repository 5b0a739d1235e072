"""Drive Debian's firefox-esr over WebDriver BiDi, offline, for the app's Firefox tests.

Why not Playwright: its BiDi channel starts firefox-esr 153 but cannot open a
page (the ESR lacks ``emulation.setMediaFeaturesOverride``), and Playwright's
patched Firefox cannot be downloaded here. Firefox speaks W3C WebDriver BiDi
itself: ``--remote-debugging-port 0`` prints ``WebDriver BiDi listening on
ws://127.0.0.1:PORT`` and ``/session`` on that socket takes ``session.new``.

Offline twice over: the profile's user.js turns off every background service
that would call home (remote settings, telemetry, updates, safe browsing, DoH,
captive portal, push...), and :func:`run_offline` runs the whole scenario --
the node, the test's HTTP client and Firefox -- in a fresh network namespace
that has only loopback (and, for calls, a veth pair whose both ends are in
it), so whatever a pref misses has nowhere to go.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import aiohttp

__all__ = [
    "DUMMY",
    "DUMMY_PEER",
    "OFFLINE_PREFS",
    "BidiError",
    "Firefox",
    "launch_firefox",
    "run_offline",
    "write_profile",
]

COMMAND_TIMEOUT: Final = 20.0  # seconds for one BiDi command; a bound, not a speed claim
START_TIMEOUT: Final = 30.0  # until Firefox prints its BiDi address
KEYS: Final = {"Tab": "\ue004", "Enter": "\ue007", "Shift": "\ue008"}  # WebDriver key codes
_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://[0-9.:\[\]]+)")
_CLONE_NEWNET: Final = 0x40000000
DUMMY: Final = "offline0"  # run_offline's extra interface, and its veth peer
DUMMY_PEER: Final = "offline1"

# Everything that would make Firefox open a connection of its own accord.
OFFLINE_PREFS: Final[dict[str, bool | int | str]] = {
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "messaging-system.rsexperimentloader.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "http://127.0.0.1:9/",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,  # DNS over HTTPS off by choice
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "dom.push.enabled": False,
    "dom.push.connection.enabled": False,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.region.update.enabled": False,
    "browser.region.network.url": "",
    "browser.search.update": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "extensions.pocket.enabled": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "geo.provider.network.url": "",
    "network.predictor.enabled": False,
    "security.OCSP.enabled": 0,
    "security.remote_settings.crlite_filters.enabled": False,
    "identity.fxaccounts.enabled": False,
    "browser.ping-centre.telemetry": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
}


class BidiError(RuntimeError):
    """A command Firefox refused: the remote error code and message, verbatim."""

    def __init__(self, method: str, error: str, message: str) -> None:
        super().__init__(f"{method}: {error}: {message}")
        self.error = error


def write_profile(
    directory: Path, *, dark: bool, prefs: dict[str, bool | int | str] | None = None
) -> Path:
    """A fresh profile whose user.js keeps Firefox offline; ``dark`` sets prefers-color-scheme."""
    directory.mkdir(parents=True, exist_ok=True)
    every = {**OFFLINE_PREFS, "ui.systemUsesDarkTheme": 1 if dark else 0, **(prefs or {})}
    lines = [
        f"user_pref({json.dumps(name)}, {json.dumps(value)});" for name, value in every.items()
    ]
    (directory / "user.js").write_text("\n".join(lines) + "\n")
    return directory


class Firefox:
    """One BiDi session: commands carry ids, each waits at most ``COMMAND_TIMEOUT``."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.context = ""  # the top-level browsing context, set at launch

    async def read_replies(self) -> None:
        """Hand each reply to its command; events are not used by these tests."""
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            reply = json.loads(message.data)
            waiter = self._waiting.pop(reply.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("Firefox closed the BiDi socket"))

    async def command(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        waiter = self._waiting[ident] = asyncio.get_running_loop().create_future()
        await self._socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                reply = await waiter
        finally:
            self._waiting.pop(ident, None)
        if reply.get("type") == "error":
            raise BidiError(method, str(reply.get("error")), str(reply.get("message")))
        result = reply.get("result")
        assert isinstance(result, dict), method
        return result

    async def navigate(self, url: str) -> None:
        params = {"context": self.context, "url": url, "wait": "complete"}
        await self.command("browsingContext.navigate", params)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited if a promise) in the page."""
        wrapped = f"(async () => JSON.stringify(await ({expression})))()"
        params = {
            "expression": wrapped, "target": {"context": self.context}, "awaitPromise": True,
        }  # fmt: skip
        result = await self.command("script.evaluate", params)
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BidiError("script.evaluate", "exception", str(details.get("text")))
        value = result["result"]
        return None if value.get("type") == "undefined" else json.loads(value["value"])

    async def wait_for(self, expression: str, within: float) -> Any:
        """Poll ``expression`` until it is truthy; its last value goes into the timeout error."""
        last: Any = None
        try:
            async with asyncio.timeout(within):
                while not (last := await self.evaluate(expression)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"still false after {within} s: {expression} -> {last}") from None
        return last

    async def press(self, *keys: str) -> None:
        """Real key events: each key down then up, ``Shift`` held over the next key."""
        actions: list[dict[str, str]] = []
        held: list[str] = []
        for key in keys:
            code = KEYS.get(key, key)
            actions.append({"type": "keyDown", "value": code})
            if key == "Shift":
                held.append(code)
                continue
            actions.append({"type": "keyUp", "value": code})
            actions += [{"type": "keyUp", "value": h} for h in held]
            held.clear()
        source = {"type": "key", "id": "keyboard", "actions": actions}
        await self.command("input.performActions", {"context": self.context, "actions": [source]})

    async def type_text(self, text: str) -> None:
        """Type ``text`` into the focused element, one real key press per character."""
        actions = [{"type": kind, "value": c} for c in text for kind in ("keyDown", "keyUp")]
        source = {"type": "key", "id": "keyboard", "actions": actions}
        await self.command("input.performActions", {"context": self.context, "actions": [source]})

    async def screenshot(self, path: Path) -> None:
        params = {"context": self.context, "origin": "document"}
        result = await self.command("browsingContext.captureScreenshot", params)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))


async def _listening_address(log: Path, process: asyncio.subprocess.Process) -> str:
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            found = _LISTENING.search(text)
            if found:
                return found.group(1)
            if process.returncode is not None:
                raise RuntimeError(f"firefox exited {process.returncode}: {text[-2000:]}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def launch_firefox(executable: str, profile: Path) -> AsyncIterator[Firefox]:
    """Headless Firefox on ``profile``, a BiDi session and its first tab; all ended on exit."""
    log = profile.with_suffix(".log")
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            executable, "--headless", "--no-remote", "--remote-debugging-port", "0",
            "--profile", str(profile), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True,  # its content processes share our child's group id
        )  # fmt: skip
    try:
        address = await _listening_address(log, process)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{address}/session", max_msg_size=64 * 2**20) as socket,
            asyncio.TaskGroup() as tasks,
        ):
            firefox = Firefox(socket)
            reader = tasks.create_task(firefox.read_replies())
            try:
                await firefox.command("session.new", {"capabilities": {}})
                tree = await firefox.command("browsingContext.getTree", {"maxDepth": 0})
                firefox.context = tree["contexts"][0]["context"]
                yield firefox
                with suppress(BidiError, TimeoutError, ConnectionError):
                    await firefox.command("session.end", {})
            finally:
                await socket.close()
                reader.cancel()
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the group we started, by its id
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def run_offline(
    scenario: Callable[[], Coroutine[Any, Any, None]], dummy: str | None = None
) -> None:
    """Run ``scenario`` on a thread in a new network namespace with only loopback (needs root).

    A network namespace belongs to a thread: sockets made and processes started
    from this thread live in it, so the node, aiohttp and Firefox see only
    their own ``lo``; the namespace goes when the thread and its sockets do.
    ``dummy`` ("10.99.0.1/24") adds an interface with that address: ICE agents
    skip loopback candidates. It is a veth pair whose both ends are in this
    namespace, so it leads nowhere either.
    """
    failure: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
            if dummy is not None:
                for argv in (
                    # a veth pair with both ends here (no dummy module in every
                    # kernel): its far end is in this namespace too
                    ["ip", "link", "add", DUMMY, "type", "veth", "peer", "name", DUMMY_PEER],
                    ["ip", "link", "set", DUMMY_PEER, "up"],
                    ["ip", "addr", "add", dummy, "dev", DUMMY],
                    ["ip", "link", "set", DUMMY, "up"],
                    # Firefox gathers ICE candidates only with a default route; the
                    # route ends at the veth's far end, here, which forwards nothing
                    ["ip", "route", "add", "default", "dev", DUMMY],
                ):
                    subprocess.run(argv, check=True, timeout=10)
            asyncio.run(scenario())
        except BaseException as error:  # handed to the test's thread
            failure.append(error)

    thread = threading.Thread(target=body, name="offline-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
