#!/usr/bin/env python3
"""Give Claude a tool that runs in this client: define it, answer the model's calls,
print the final answer.

    python custom_tool.py "Make the word hi bold with the CustomFormatter tool."

The tool, CustomFormatter, wraps text in Markdown bold or italic. The model knows it
as `mcp__ws__CustomFormatter`; its calls reach this client as `tool_call` messages
and are answered with `tool_result`. URL and token as in client.py. Exits 0 when the
query completed.
"""

import argparse
import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

TOOL = {
    "name": "CustomFormatter",
    "description": "Formats text in Markdown: bold or italic.",
    # Simple parameters (as here) or a JSON Schema as "input_schema".
    "parameters": {
        "text": {"type": "string", "required": True},
        "style": {"type": "string", "enum": ["bold", "italic"]},
    },
}


def custom_formatter(text, style="bold"):
    marks = "**" if style == "bold" else "*"
    return f"{marks}{text}{marks}"


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


async def run(url, prompt):
    token = os.environ.get("CLAUDE_WS_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, max_size=64 * 2**20) as ws:
        async for frame in ws:
            message = json.loads(frame)
            kind, data = message["type"], message["data"]
            if kind == "connection_established":
                if not data["capabilities"].get("tool_definition"):
                    log("[failed] this server does not take tool definitions")
                    return 1
                await ws.send(json.dumps({"type": "define_tool", "tool": TOOL}))
            elif kind == "tool_defined":
                print(f"defined: {data['tool_name']}")
                await ws.send(json.dumps({"type": "query", "prompt": prompt}))
            elif kind == "tool_call":
                args = data["input"]
                if data["name"] == TOOL["name"]:
                    content = custom_formatter(args["text"], args.get("style", "bold"))
                    is_error = False
                else:
                    content, is_error = f"no tool named {data['name']}", True
                print(f"call: {data['name']}({json.dumps(args)}) -> {content}")
                await ws.send(json.dumps({
                    "type": "tool_result",
                    "call_id": data["call_id"],
                    "content": content,  # text, or a list of content blocks
                    "is_error": is_error,
                }))
            elif kind == "assistant_message":
                for block in data["content"]:
                    if block["type"] == "text":
                        print(f"claude: {block['text']}")
            elif kind == "error":
                log(f"[error] {data['code']}: {data['error']}")
                if data["code"] == "invalid_field":  # the definition was refused
                    return 1
            elif kind == "query_end":
                print(f"outcome: {data['outcome']}")
                return 0 if data["outcome"] == "completed" else 1
    log("[closed] the server closed the connection before the query ended")
    return 1


def main():
    parser = argparse.ArgumentParser(description="Define a tool the model can call.")
    parser.add_argument(
        "prompt", nargs="?", default="Use the CustomFormatter tool to make the word hi bold."
    )
    parser.add_argument("--url", default=os.environ.get("CLAUDE_WS_URL", "ws://localhost:8000/ws"))
    args = parser.parse_args()
    try:
        return asyncio.run(run(args.url, args.prompt))
    except (OSError, WebSocketException) as e:
        log(f"[failed] {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
