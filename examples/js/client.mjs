#!/usr/bin/env node
// Ask claude-ws one question from Node and print the answer as it streams in.
//
//   node client.mjs "What is 2 + 2?"
//   node client.mjs --url ws://localhost:9000/ws "hello"
//
// The URL is --url, else $CLAUDE_WS_URL, else ws://localhost:8000/ws; a token in
// $CLAUDE_WS_AUTH_TOKEN is sent. The answer goes to stdout; connection, cost and errors
// go to stderr. Exits 0 when the query completed, 1 otherwise.
//
// Needs `ws` (npm install in this folder, or scripts/install-example-deps.sh).

import WebSocket from "ws";
import { ask } from "./claude-ws.mjs";

const args = process.argv.slice(2);
let url = process.env.CLAUDE_WS_URL || "ws://localhost:8000/ws";
const at = args.indexOf("--url");
if (at !== -1) {
  url = args[at + 1];
  args.splice(at, 2);
}
const prompt = args[0] || "Say hello in five words.";

const outcome = await ask({
  WebSocket,
  url,
  prompt,
  token: process.env.CLAUDE_WS_AUTH_TOKEN,
  onText: (text) => process.stdout.write(text),
  onStatus: (line) => console.error(`[${line}]`),
});
process.stdout.write("\n");
process.exitCode = outcome === "completed" ? 0 : 1;
