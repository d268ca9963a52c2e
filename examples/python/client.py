#!/usr/bin/env python3
"""Ask claude-ws one question and print the answer as it streams in.

    python client.py "What is 2 + 2?"
    python client.py --url ws://localhost:9000/ws "hello"

The URL is --url, else $CLAUDE_WS_URL, else ws://localhost:8000/ws. When
$CLAUDE_WS_AUTH_TOKEN is set it is sent as `Authorization: Bearer <token>`.
The answer goes to stdout; connection, cost and errors go to stderr. Exits 0 when
the query completed, 1 otherwise.

Needs `websockets` (pip install -r requirements.txt, or scripts/install-example-deps.sh).
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


async def ask(url, prompt):
    token = os.environ.get("CLAUDE_WS_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Replies can be larger than websockets' 1 MiB default (a big tool result).
    async with connect(url, additional_headers=headers, max_size=64 * 2**20) as ws:
        # Streamed text (`stream_event` deltas) comes before the whole message
        # (`assistant_message`); print the whole message only if it was not streamed.
        streamed = False
        # Every server message is {"type": ..., "seq": N, "data": {...}}.
        async for frame in ws:
            message = json.loads(frame)
            kind, data = message["type"], message["data"]
            if kind == "connection_established":
                log(f"[connected] session {data['session_id']}")
                await ws.send(json.dumps({
                    "type": "query",
                    "prompt": prompt,
                    "options": {"include_partial_messages": True},
                }))
            elif kind == "query_queued":
                log(f"[queued] position {data['position']}")
            elif kind == "stream_event":
                event = data["event"]
                delta = event.get("delta", {})
                if event.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                    print(delta["text"], end="", flush=True)
                    streamed = True
            elif kind == "assistant_message":
                for block in data["content"]:
                    if block["type"] == "text" and not streamed:
                        print(block["text"], end="", flush=True)
                    elif block["type"] == "tool_use":
                        log(f"\n[tool] {block['name']} {json.dumps(block['input'])}")
                streamed = False
            elif kind == "permission_request":
                # This client answers no prompts: see permissions.py.
                log(f"[permission] {data['tool_name']} denied (see permissions.py)")
                await ws.send(json.dumps({
                    "type": "permission_response",
                    "request_id": data["request_id"],
                    "behavior": "deny",
                    "message": "this client does not allow tools",
                }))
            elif kind == "result_message":
                print()
                log(f"[result] {data['subtype']}, cost ${data.get('total_cost_usd', 0):.4f}, "
                    f"{data.get('duration_ms', 0)} ms")
            elif kind == "error":
                log(f"[error] {data['code']}: {data['error']}")
            elif kind == "query_end":
                log(f"[end] {data['outcome']}")
                return 0 if data["outcome"] == "completed" else 1
    log("[closed] the server closed the connection before the query ended")
    return 1


def main():
    parser = argparse.ArgumentParser(description="Ask claude-ws one question.")
    parser.add_argument("prompt", nargs="?", default="Say hello in five words.")
    parser.add_argument("--url", default=os.environ.get("CLAUDE_WS_URL", "ws://localhost:8000/ws"))
    args = parser.parse_args()
    try:
        return asyncio.run(ask(args.url, args.prompt))
    except (OSError, WebSocketException) as e:  # refused; HTTP 401/403 at the handshake; dropped
        log(f"[failed] {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
