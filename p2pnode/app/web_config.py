"""The ``[web]`` section: the desktop app the node serves to the user's own browser.

Why its own port and not a mount on the control API: the app authenticates a
browser with a session cookie, the control API authenticates programs with a
bearer token. Keeping them on two origins means a cookie can never authorise
a control-API request and the control API keeps its one simple rule (token or
401); the app server checks Host and Origin, then forwards to the control API
with the token, which the page never sees.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["WEB_FILE", "WebSection"]

WEB_FILE = "web.json"  # {"url": ..., "pid": ...} of the running app server, in the home


class WebSection(BaseModel):
    """The app server: loopback only, opened through ``p2pnode app``'s one-time link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="serve the desktop app (needs [control])")
    host: str = Field("127.0.0.1", description="loopback address to listen on")
    port: int = Field(0, ge=0, le=65535, description="0: any free port (see <home>/web.json)")
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="an idle browser session ends after this"
    )

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if value not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the app is served on loopback only (127.0.0.1, ::1, localhost)")
        return value
