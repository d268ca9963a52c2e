"""A claude-agent-sdk Transport that reaches Claude Code through claude-ws's /sdk endpoint.

    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient
    from claude_ws_sdk import WebSocketTransport

    options = ClaudeAgentOptions(model="claude-sonnet-4-5", can_use_tool=my_check)
    transport = WebSocketTransport("ws://host:8765/sdk", options, token="...")
    async with ClaudeSDKClient(options, transport=transport) as client:
        await client.query("hello")
        async for message in client.receive_response():
            print(message)

The SDK applies none of its CLI-flag options to a custom transport, so this one carries
them: `sdk_start`'s `options` are built from the same `ClaudeAgentOptions` (see
`sdk_options`; an option the server cannot take is refused here, before connecting).
Hooks, `can_use_tool`, in-process MCP servers, interrupt, set_model and the other
control requests are lines of the stream, relayed unchanged both ways.

A connection that drops (not closed by either side) is resumed once per drop with
`/sdk?session_id=S&last_frame=N`: the server sends every later frame exactly once.

Needs `websockets` and `claude-agent-sdk` (examples/python/requirements.txt).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import anyio
import websockets
from claude_agent_sdk import ClaudeAgentOptions, CLIConnectionError
from claude_agent_sdk._internal.transport import Transport

__all__ = ["WebSocketTransport", "StartRefused", "sdk_options"]

# ClaudeAgentOptions fields that sdk_start's options carry (same names).
_SAME_NAME = (
    "allowed_tools",
    "disallowed_tools",
    "permission_mode",
    "model",
    "max_turns",
    "resume",
    "continue_conversation",
    "include_partial_messages",
    "max_thinking_tokens",
)
# Fields the SDK itself handles over the stream (initialize, control requests), or that
# only matter on the client's side: fine at any value.
_CLIENT_SIDE = {
    "hooks",
    "can_use_tool",
    "agents",
    "stderr",
    "mcp_servers",  # checked below: in-process ("sdk") servers only
    "permission_prompt_tool_name",  # checked below: "stdio" only
    "system_prompt",  # mapped below
    "cwd",  # mapped below
    "session_store",
    "session_store_flush",
    "load_timeout_ms",
    "max_buffer_size",
    "debug_stderr",
    "cli_path",
    "verbatim_prompts",
    "client_app",
    "forward_subagent_text",
}


class StartRefused(CLIConnectionError):
    """The server refused `sdk_start` (or the upgrade): `code` is its error code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"claude-ws refused the session ({code}): {message}")
        self.code = code


def sdk_options(options: ClaudeAgentOptions | None) -> dict[str, Any]:
    """`sdk_start`'s options for `options`; ValueError names an option /sdk cannot carry."""
    options = options or ClaudeAgentOptions()
    out: dict[str, Any] = {}
    for name in _SAME_NAME:
        value = getattr(options, name, None)
        if value not in (None, [], False):
            out[name] = value
    if options.cwd is not None:
        out["cwd"] = str(options.cwd)
    prompt = options.system_prompt
    if isinstance(prompt, str):
        out["system_prompt"] = prompt
    elif isinstance(prompt, dict) and prompt.get("type") == "preset":
        if prompt.get("append"):
            out["append_system_prompt"] = prompt["append"]
    elif prompt is not None:
        raise ValueError(f"claude-ws /sdk cannot carry system_prompt {prompt!r}")
    tool = options.permission_prompt_tool_name
    if tool not in (None, "stdio"):
        raise ValueError("claude-ws /sdk asks permission over the stream only (stdio)")
    if options.can_use_tool is not None or tool == "stdio":
        out["permission_prompts"] = True
    servers = options.mcp_servers if isinstance(options.mcp_servers, dict) else {}
    if not isinstance(options.mcp_servers, dict):
        raise ValueError("claude-ws /sdk takes mcp_servers as a dict of in-process servers")
    for name, config in servers.items():
        if not (isinstance(config, dict) and config.get("type") == "sdk"):
            raise ValueError(
                f"claude-ws /sdk runs in-process MCP servers only (create_sdk_mcp_server); "
                f"{name!r} would start a process on the server"
            )
    if servers:
        out["sdk_mcp_servers"] = list(servers)
    defaults = ClaudeAgentOptions()
    for field in dataclasses.fields(options):
        name = field.name
        if name in _SAME_NAME or name in _CLIENT_SIDE:
            continue
        if getattr(options, name) != getattr(defaults, name):
            raise ValueError(
                f"claude-ws /sdk cannot carry the option {name!r}; the server sets it "
                f"from its own policy (leave it unset)"
            )
    return out


class WebSocketTransport(Transport):
    """`claude_agent_sdk.Transport` over a WebSocket to claude-ws's `/sdk`."""

    def __init__(
        self,
        url: str,
        options: ClaudeAgentOptions | None = None,
        token: str | None = None,
        *,
        open_timeout: float = 60,
        resume_attempts: int = 3,
    ):
        self.url = url
        self.start = {"type": "sdk_start", "options": sdk_options(options)}
        self.token = token
        self.open_timeout = open_timeout
        self.resume_attempts = resume_attempts
        self.session_id: str | None = None
        # Frames received after sdk_started: what a resume's last_frame counts.
        self.frames = 0
        self.resumes = 0
        self._ws: Any = None
        self._closing = False
        self._ready = False
        self._lock = anyio.Lock()

    async def _open(self, url: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            return await websockets.connect(
                url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                max_size=None,
                ping_interval=None,
            )
        except websockets.InvalidStatus as e:
            body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
            try:
                data = json.loads(body)
                raise StartRefused(data["code"], data["error"]) from e
            except (ValueError, KeyError, TypeError):
                raise StartRefused(f"http_{e.response.status_code}", body) from e

    async def _hello(self, ws: Any) -> dict[str, Any]:
        """Read frames up to `sdk_started` (past any `sdk_queued`); refusals raise."""
        while True:
            try:
                frame = json.loads(await ws.recv())
            except websockets.ConnectionClosed as e:
                raise StartRefused("closed", f"the server closed the connection ({e})") from e
            kind = frame.get("type")
            if kind == "sdk_started":
                return frame
            if kind == "error":
                data = frame.get("data", {})
                await ws.close()
                raise StartRefused(data.get("code", "error"), data.get("error", ""))
            # sdk_queued: waiting for a --max-running place

    async def connect(self) -> None:
        ws = await self._open(self.url)
        await ws.send(json.dumps(self.start))
        started = await self._hello(ws)
        self.session_id = started["session_id"]
        self._ws = ws
        self._ready = True

    async def _resume(self) -> bool:
        """Reattach after a drop; False when the session cannot be had back."""
        if self._closing or self.session_id is None or self.resumes >= self.resume_attempts:
            return False
        self.resumes += 1
        query = urlencode({"session_id": self.session_id, "last_frame": self.frames})
        try:
            ws = await self._open(f"{self.url}?{query}")
            hello = await self._hello(ws)
        except (OSError, CLIConnectionError, websockets.WebSocketException):
            return False
        if not hello.get("resumed"):
            await ws.close()
            return False
        self._ws = ws
        return True

    async def write(self, data: str) -> None:
        if not self._ready:
            raise CLIConnectionError("the transport is not connected")
        for line in data.splitlines():
            if not line.strip():
                continue
            async with self._lock:
                try:
                    await self._ws.send(line)
                except websockets.ConnectionClosed:
                    if not await self._resume():
                        raise CLIConnectionError("the connection to claude-ws is closed")
                    await self._ws.send(line)

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            ws = self._ws
            try:
                frame = await ws.recv()
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                if code in (1000, 1001, 1008, 1012) or self._closing:
                    # Ended by the server (done, shutting down, refused, draining).
                    if code == 1008 and not self._closing:
                        raise CLIConnectionError(f"claude-ws closed the session: {e}") from e
                    return
                if ws is not self._ws:
                    continue  # write() already resumed
                if not await self._resume():
                    raise CLIConnectionError(f"the connection to claude-ws was lost: {e}") from e
                continue
            self.frames += 1
            yield json.loads(frame)

    def abort_connection(self) -> None:
        """Cut the connection without a close frame, as a network failure would (the
        next read or write resumes the session). For tests and demonstrations."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def end_input(self) -> None:
        if self._ready and not self._closing:
            try:
                await self._ws.send(json.dumps({"type": "sdk_end_input"}))
            except websockets.ConnectionClosed:
                pass

    async def close(self) -> None:
        self._closing = True
        self._ready = False
        if self._ws is not None:
            with anyio.move_on_after(5):
                await self._ws.close(1000)

    def is_ready(self) -> bool:
        return self._ready
