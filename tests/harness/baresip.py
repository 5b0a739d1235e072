"""A headless baresip phone for tests: its config directory and its registration.

baresip 1.0 (Debian) reads ``config`` and ``accounts`` from the directory given
with ``-f``. Headless: a sine source (``ausine``), no player (``aubridge`` to
nowhere), every call recorded by ``sndfile`` into ``records/`` (``*-dec.wav`` is
what the phone heard), auto-answer, PCMU only. On a host with more than one
address give ``net_interface``, or its SDP may name an address its RTP does
not come from (the gateway's latching then drops the media).

For texts give ``contacts``: the ``stdio`` UI and the ``contact`` module are
loaded, the first contact is the current one, ``/message TEXT`` written to
baresip's stdin (a pipe: stdio warns it is no terminal and works anyway)
sends ``MESSAGE`` to it, and every incoming MESSAGE is printed on stdout as
``\r<from uri>: "<text>"`` (menu's message handler through the stdio UI).
"""

from __future__ import annotations

import subprocess
import textwrap
import time
import wave
from pathlib import Path

from tests.harness.netns import read_line

__all__ = ["finished_recording", "wait_registered", "write_baresip_config"]


def write_baresip_config(
    directory: Path,
    *,
    listen: str,
    account: str,
    password: str,
    outbound: str,
    tone_hz: int = 440,
    net_interface: str | None = None,
    contacts: tuple[str, ...] = (),
    audio_codecs: str = "PCMU",
    rtcp_mux: bool = False,
) -> Path:
    """Write a phone registering ``account`` (login@domain) through ``outbound``
    (host:port), listening on ``listen`` (ip:port); returns its recordings folder.

    ``contacts`` (SIP URIs): load the console and contacts for ``/message``.
    ``audio_codecs``: the account's codec list in preference order (``opus``,
    ``G722``, ``PCMA``...; their modules are loaded). ``rtcp_mux``: offer and
    accept RTCP on the RTP port (RFC 5761; baresip sends RTCP either way)."""
    records = directory / "records"
    records.mkdir(parents=True)
    interface = f"net_interface {net_interface}\n" if net_interface else ""
    interface += "rtcp_mux yes\n" if rtcp_mux else ""
    texts = "module stdio.so\nmodule_app contact.so\n" if contacts else ""
    if contacts:
        (directory / "contacts").write_text("".join(f"<{uri}>\n" for uri in contacts))
    (directory / "config").write_text(
        "poll_method epoll\n"
        + interface
        + textwrap.dedent(
            f"""\
            sip_listen {listen}
            audio_player aubridge,nowhere
            audio_source ausine,{tone_hz}
            audio_alert aubridge,nowhere
            ausrc_srate 48000
            auplay_srate 48000
            ausrc_channels 2
            auplay_channels 1
            module_path /usr/lib/baresip/modules
            module g711.so
            module g722.so
            module opus.so
            module ausine.so
            module aubridge.so
            module sndfile.so
            module_app account.so
            module_app menu.so
            snd_path {records}
            """
        )
        + texts
    )
    (directory / "accounts").write_text(
        f'<sip:{account}>;auth_pass={password};outbound="sip:{outbound}";'
        f"regint=300;answermode=auto;audio_codecs={audio_codecs}\n"
    )
    return records


def wait_registered(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Read the phone's output until its REGISTER got 200 OK."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "200 OK" in read_line(process, max(0.1, deadline - time.monotonic())):
            return
    raise AssertionError("baresip did not register")


def finished_recording(
    records: Path,
    kind: str = "dec",
    after: frozenset[Path] | set[Path] = frozenset(),
    timeout: float = 15.0,
) -> Path:
    """The newest ``*-{kind}.wav`` not in ``after``, once baresip has closed it.

    sndfile writes the WAV header only when the call's audio stops, which is
    after the BYE reached this phone: a caller that has already exited does
    not mean the callee's recording is complete. Wait until it parses.
    """
    deadline = time.monotonic() + timeout
    newest: Path | None = None
    while True:
        found = sorted(p for p in records.glob(f"*-{kind}.wav") if p not in after)
        if found:
            newest = found[-1]
            try:
                with wave.open(str(newest), "rb") as reader:
                    if reader.getnframes() > 0:
                        return newest
            except (wave.Error, EOFError):
                pass
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"no complete {kind} recording in {records} after {timeout:.0f} s"
                + (f" (newest: {newest.name}, {newest.stat().st_size} bytes)" if newest else "")
            )
        time.sleep(0.2)
