"""The real claude-agent-sdk through examples/python/claude_ws_sdk.py against a live
claude-ws (/sdk), the real CLI and the scripted model of tests/support/mock_api.rs.
Driven by tests/sdk_python.rs: `python scenarios.py NAME`; exit 0 and a last line `ok`
when the scenario held. Environment: SDK_URL (ws://.../sdk), SDK_TOKEN (optional),
SDK_WORK (the server's workspace: where the CLI writes files).
"""

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python"))

from claude_agent_sdk import (  # noqa: E402
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    HookMatcher,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    StreamEvent,
    TextBlock,
    create_sdk_mcp_server,
    tool,
)

from claude_ws_sdk import StartRefused, WebSocketTransport  # noqa: E402

URL = os.environ["SDK_URL"]
TOKEN = os.environ.get("SDK_TOKEN") or None
WORK = Path(os.environ.get("SDK_WORK", "."))


def client(options: ClaudeAgentOptions, token=TOKEN) -> tuple[ClaudeSDKClient, WebSocketTransport]:
    transport = WebSocketTransport(URL, options, token=token)
    return ClaudeSDKClient(options, transport=transport), transport


async def turn(c: ClaudeSDKClient, prompt: str) -> tuple[str, ResultMessage, list]:
    """Ask; the answer's text, its result and every message."""
    await c.query(prompt)
    texts, messages, result = [], [], None
    async for m in c.receive_response():
        messages.append(m)
        if isinstance(m, AssistantMessage):
            texts += [b.text for b in m.content if isinstance(b, TextBlock)]
        if isinstance(m, ResultMessage):
            result = m
    assert result is not None, messages
    return "".join(texts), result, messages


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def query_and_follow_up():
    c, _ = client(ClaudeAgentOptions())
    async with c:
        text, result, _ = await turn(c, "hello from the sdk")
        check("Echo: hello from the sdk" in text, text)
        check(not result.is_error, result)
        text, _, _ = await turn(c, "recall")
        check("hello from the sdk" in text and "recall" in text, f"context lost: {text}")


async def can_use_tool():
    asked = []

    async def decide(name, input, context):
        asked.append((name, input.get("file_path")))
        if input.get("file_path", "").endswith("allowed.txt"):
            return PermissionResultAllow()
        return PermissionResultDeny(message="not this one")

    options = ClaudeAgentOptions(can_use_tool=decide, permission_mode="default")
    c, _ = client(options)
    async with c:
        await turn(c, f"write {WORK / 'allowed.txt'} yes")
        await turn(c, f"write {WORK / 'denied.txt'} no")
    check([n for n, _ in asked] == ["Write", "Write"], asked)
    check((WORK / "allowed.txt").read_text() == "yes", "the allowed Write did not run")
    check(not (WORK / "denied.txt").exists(), "the denied Write ran")


async def hook_denies_bash():
    seen = []

    async def pre_tool_use(input, tool_use_id, context):
        seen.append(input["tool_input"]["command"])
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": "no commands today",
            }
        }

    marker = WORK / "hook-marker"
    options = ClaudeAgentOptions(
        allowed_tools=["Bash"],
        hooks={"PreToolUse": [HookMatcher(matcher="Bash", hooks=[pre_tool_use])]},
    )
    c, _ = client(options)
    async with c:
        text, _, _ = await turn(c, f"bash touch {marker}")
    check(seen == [f"touch {marker}"], seen)
    check("no commands today" in text, f"the denial did not reach the model: {text}")
    check(not marker.exists(), "the Bash command ran despite the hook")


async def mcp_tool():
    calls = []

    @tool("add", "Add two numbers", {"a": int, "b": int})
    async def add(args):
        calls.append(args)
        return {"content": [{"type": "text", "text": f"sum={args['a'] + args['b']}"}]}

    server = create_sdk_mcp_server("calc", tools=[add])
    options = ClaudeAgentOptions(mcp_servers={"calc": server}, allowed_tools=["mcp__calc__add"])
    c, _ = client(options)
    async with c:
        text, _, _ = await turn(c, 'tool mcp__calc__add {"a": 2, "b": 3}')
    check(calls == [{"a": 2, "b": 3}], calls)
    check("Done: sum=5" in text, f"the tool's result did not reach the model: {text}")


async def interrupt():
    c, _ = client(ClaudeAgentOptions(include_partial_messages=True))
    async with c:
        await c.query("slow 200 50")
        result, events = None, 0
        async for m in c.receive_response():
            if isinstance(m, StreamEvent):
                events += 1
                if events == 5:
                    await c.interrupt()
            if isinstance(m, ResultMessage):
                result = m
        check(result is not None and events >= 5, (result, events))
        check(events < 150, f"the answer was not cut short: {events} deltas")
        text, result, _ = await turn(c, "after the interrupt")
        check("Echo: after the interrupt" in text, text)


async def set_model():
    c, _ = client(ClaudeAgentOptions())
    async with c:
        await turn(c, "first")
        await c.set_model("claude-haiku-4-5")
        _, _, messages = await turn(c, "second")
    models = [m.model for m in messages if isinstance(m, AssistantMessage)]
    check(models and all(m == "claude-haiku-4-5" for m in models), models)


async def refused_start():
    c, _ = client(ClaudeAgentOptions(permission_mode="bypassPermissions"))
    try:
        async with c:
            raise AssertionError("a start the operator does not allow was accepted")
    except StartRefused as e:
        check(e.code == "permission_mode_not_allowed", e)


async def refused_set_permission_mode():
    c, _ = client(ClaudeAgentOptions())
    async with c:
        try:
            await c.set_permission_mode("bypassPermissions")
            raise AssertionError("set_permission_mode bypassPermissions was accepted")
        except AssertionError:
            raise
        except Exception as e:  # the SDK raises the control_response's error
            check("not allowed" in str(e), e)
        await c.set_permission_mode("acceptEdits")
        text, _, _ = await turn(c, "still here")
        check("Echo: still here" in text, text)


async def authentication():
    c, _ = client(ClaudeAgentOptions(), token=None)
    try:
        async with c:
            raise AssertionError("connected without a token")
    except StartRefused as e:
        check(e.code == "unauthorized", e)
    c, _ = client(ClaudeAgentOptions(), token="wrong-token")
    try:
        async with c:
            raise AssertionError("connected with a wrong token")
    except StartRefused as e:
        check(e.code == "unauthorized", e)
    c, _ = client(ClaudeAgentOptions())
    async with c:
        text, _, _ = await turn(c, "with the token")
        check("Echo: with the token" in text, text)


async def resume():
    c, t = client(ClaudeAgentOptions(include_partial_messages=True))
    async with c:
        await c.query("slow 40 40")
        deltas = []
        async for m in c.receive_response():
            if isinstance(m, StreamEvent) and m.event.get("type") == "content_block_delta":
                deltas.append(m.event["delta"]["text"])
                if len(deltas) == 5:
                    t.abort_connection()
        expected = [f"word{i} " for i in range(40)]
        check(deltas == expected, f"lost or repeated frames: {deltas}")
        check(t.resumes == 1, t.resumes)
        text, _, _ = await turn(c, "recall")
        check("slow 40 40" in text, text)
    print(f"session {t.session_id} resumed after a drop")


SCENARIOS = {f.__name__: f for f in [
    query_and_follow_up, can_use_tool, hook_denies_bash, mcp_tool, interrupt, set_model,
    refused_start, refused_set_permission_mode, authentication, resume,
]}

if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(SCENARIOS[sys.argv[1]](), 120))
    print("ok")
