#!/usr/bin/env python3
"""Answer Claude's permission prompts: the model asks before a tool runs, this client
says allow (or, with --deny, deny) and prints what came of it.

    python permissions.py "Create hello.txt containing hi"
    python permissions.py --deny "Delete every file here"
    python permissions.py --cwd project "Run ls"

The query asks for prompts with the option "permission_prompts": true (the server's
--permission-prompts makes that the default). --cwd picks the working directory: it
must be inside one of the server's --workspace-root directories (relative paths start
from the first). URL and token as in client.py. Exits 0 when the query completed.
"""

import argparse
import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


async def run(url, prompt, cwd, allow):
    token = os.environ.get("CLAUDE_WS_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(url, additional_headers=headers, max_size=64 * 2**20) as ws:
        options = {"permission_prompts": True}
        if cwd:
            options["cwd"] = cwd
        async for frame in ws:
            message = json.loads(frame)
            kind, data = message["type"], message["data"]
            if kind == "connection_established":
                if not data["capabilities"].get("permission_prompts"):
                    log("[failed] this server does not send permission prompts")
                    return 1
                await ws.send(json.dumps({"type": "query", "prompt": prompt, "options": options}))
            elif kind == "permission_request":
                # The CLI waits for this answer before it runs (or skips) the tool.
                behavior = "allow" if allow else "deny"
                tool_input = json.dumps(data["input"], ensure_ascii=False)
                print(f"permission: {data['tool_name']} {tool_input} -> {behavior}")
                answer = {
                    "type": "permission_response",
                    "request_id": data["request_id"],
                    "behavior": behavior,
                }
                if not allow:
                    answer["message"] = "The user said no."  # the model reads this
                await ws.send(json.dumps(answer))
            elif kind == "assistant_message":
                for block in data["content"]:
                    if block["type"] == "text":
                        print(f"claude: {block['text']}")
                    elif block["type"] == "tool_result":
                        status = "failed" if block.get("is_error") else "ran"
                        content = json.dumps(block["content"], ensure_ascii=False)
                        print(f"tool {status}: {content[:200]}")
            elif kind == "result_message":
                for denial in data.get("permission_denials") or []:
                    print(f"denied: {denial['tool_name']}")
            elif kind == "error":
                log(f"[error] {data['code']}: {data['error']}")
            elif kind == "query_end":
                print(f"outcome: {data['outcome']}")
                return 0 if data["outcome"] == "completed" else 1
    log("[closed] the server closed the connection before the query ended")
    return 1


def main():
    parser = argparse.ArgumentParser(description="Answer claude-ws permission prompts.")
    parser.add_argument("prompt", nargs="?", default="Create a file hello.txt that says hi.")
    parser.add_argument("--url", default=os.environ.get("CLAUDE_WS_URL", "ws://localhost:8000/ws"))
    parser.add_argument("--cwd", help="working directory, inside a --workspace-root of the server")
    parser.add_argument("--deny", action="store_true", help="deny every prompt (default: allow)")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args.url, args.prompt, args.cwd, not args.deny))
    except (OSError, WebSocketException) as e:
        log(f"[failed] {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
