// A spawnClaudeCodeProcess for @anthropic-ai/claude-agent-sdk that runs Claude Code on a
// claude-ws server (its /sdk endpoint) instead of as a local child:
//
//   import { query } from "@anthropic-ai/claude-agent-sdk";
//   import { claudeWsSpawner } from "./claude-ws-sdk.mjs";
//   for await (const m of query({ prompt: "hello", options: {
//       spawnClaudeCodeProcess: claudeWsSpawner("ws://host:8765/sdk", { token }),
//       pathToClaudeCodeExecutable: "claude-ws" } })) console.log(m);
//
// The SDK builds the CLI's argv; the flags claude-ws's sdk_start options can carry are
// mapped to them (ARGV_TO_OPTION), the flags that only shape the stream are dropped
// (STREAM_FLAGS), and any other flag refuses the session with an error naming it: the
// server sets those from its own policy. Hooks, canUseTool, in-process MCP servers,
// interrupt(), setModel() and the other control requests are lines of the stream,
// relayed unchanged. A connection that drops is resumed with
// /sdk?session_id=S&last_frame=N (every later frame arrives exactly once).

import { EventEmitter } from "node:events";
import { PassThrough, Writable } from "node:stream";
import WebSocket from "ws";

// CLI flag → [sdk_start option, how its value is read].
const ARGV_TO_OPTION = {
  "--allowedTools": ["allowed_tools", "list"],
  "--disallowedTools": ["disallowed_tools", "list"],
  "--permission-mode": ["permission_mode", "string"],
  "--model": ["model", "string"],
  "--max-turns": ["max_turns", "number"],
  "--resume": ["resume", "string"],
  "--continue": ["continue_conversation", "flag"],
  "--system-prompt": ["system_prompt", "string"],
  "--append-system-prompt": ["append_system_prompt", "string"],
  "--include-partial-messages": ["include_partial_messages", "flag"],
  "--max-thinking-tokens": ["max_thinking_tokens", "number"],
  "--permission-prompt-tool": ["permission_prompts", "stdio"],
  "--mcp-config": ["sdk_mcp_servers", "mcp"],
};
// Flags of the stream itself (claude-ws sets them), or harmless on the server: dropped.
// The value says whether the flag takes one.
const STREAM_FLAGS = {
  "--output-format": true,
  "--input-format": true,
  "--verbose": false,
  "--setting-sources": true,
  "--print": false,
  "-p": false,
};

/** sdk_start's options for the SDK's `args`; throws naming a flag it cannot carry. */
export function optionsFromArgv(args) {
  const options = {};
  for (let i = 0; i < args.length; i++) {
    let flag = args[i];
    let value;
    const eq = flag.indexOf("=");
    if (flag.startsWith("--") && eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= args.length) throw new Error(`claude-ws /sdk: ${flag} needs a value`);
      return args[++i];
    };
    if (flag in STREAM_FLAGS) {
      if (STREAM_FLAGS[flag] && value === undefined) i++;
      continue;
    }
    const mapped = ARGV_TO_OPTION[flag];
    if (!mapped) {
      throw new Error(
        `claude-ws /sdk cannot carry the CLI flag ${flag} (the server sets it from its own policy); ` +
          `leave the option that makes it unset`,
      );
    }
    const [name, kind] = mapped;
    if (kind === "flag") options[name] = true;
    else if (kind === "string") options[name] = take();
    else if (kind === "number") options[name] = Number(take());
    else if (kind === "list") options[name] = take().split(",").filter(Boolean);
    else if (kind === "stdio") {
      const tool = take();
      if (tool !== "stdio") throw new Error(`claude-ws /sdk asks permission over the stream only, not ${tool}`);
      options.permission_prompts = true;
    } else if (kind === "mcp") {
      const servers = JSON.parse(take()).mcpServers ?? {};
      for (const [server, config] of Object.entries(servers)) {
        if (config?.type !== "sdk") {
          throw new Error(
            `claude-ws /sdk runs in-process MCP servers only (createSdkMcpServer); ${server} would start a process on the server`,
          );
        }
      }
      options.sdk_mcp_servers = [...(options.sdk_mcp_servers ?? []), ...Object.keys(servers)];
    }
  }
  return options;
}

/** A refused session: `code` is claude-ws's error code. */
export class StartRefused extends Error {
  constructor(code, message) {
    super(`claude-ws refused the session (${code}): ${message}`);
    this.code = code;
  }
}

/**
 * A `spawnClaudeCodeProcess` reaching `url` (ws://host:port/sdk). `token`: sent as
 * `Authorization: Bearer`. `onSession(transport)`: called with the process-like object
 * once the session started (its `sessionId`, `frames`, `resumes`, `abortConnection()`).
 */
export function claudeWsSpawner(url, { token, resumeAttempts = 3, onSession } = {}) {
  const spawn = (spawnOptions) => {
    spawn.last = new ClaudeWsProcess(url, spawnOptions, { token, resumeAttempts, onSession });
    return spawn.last;
  };
  return spawn;
}

class ClaudeWsProcess extends EventEmitter {
  constructor(url, { args, signal }, { token, resumeAttempts, onSession }) {
    super();
    this.url = url;
    this.token = token;
    this.resumeAttempts = resumeAttempts;
    this.onSession = onSession;
    this.sessionId = null;
    this.frames = 0; // after sdk_started: what a resume's last_frame counts
    this.resumes = 0;
    this.killed = false;
    this.exitCode = null;
    this.ws = null;
    this.started = false;
    this.waiting = []; // lines written before sdk_started
    this.inputEnded = false;
    this.stdout = new PassThrough();
    let partial = "";
    this.stdin = new Writable({
      write: (chunk, _enc, done) => {
        partial += chunk.toString("utf8");
        const lines = partial.split("\n");
        partial = lines.pop();
        for (const line of lines) if (line.trim()) this.send(line);
        done();
      },
      final: (done) => {
        this.inputEnded = true;
        this.send(JSON.stringify({ type: "sdk_end_input" }));
        done();
      },
    });
    signal?.addEventListener("abort", () => this.kill("SIGTERM"));
    try {
      this.options = optionsFromArgv(args);
    } catch (e) {
      queueMicrotask(() => this.fail(e));
      return;
    }
    // The SDK names its in-process MCP servers in its first line (initialize), not in
    // the argv: the session starts once that line is here (or after a short wait), so
    // sdk_start can declare them (the server gives the CLI their --mcp-config entries).
    this.startTimer = setTimeout(() => this.begin(), 1000);
  }

  begin(firstLine) {
    if (this.ws || this.exitCode !== null) return;
    clearTimeout(this.startTimer);
    let servers = [];
    try {
      const declared = JSON.parse(firstLine ?? "{}").request?.sdkMcpServers ?? [];
      servers = Array.isArray(declared) ? declared : Object.keys(declared);
    } catch {} // not JSON: the server refuses it once the session runs
    if (servers.length) {
      this.options.sdk_mcp_servers = [...new Set([...(this.options.sdk_mcp_servers ?? []), ...servers])];
    }
    this.open(this.url, JSON.stringify({ type: "sdk_start", options: this.options }));
  }

  open(url, first) {
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    const ws = new WebSocket(url, { headers, maxPayload: 0 });
    this.ws = ws;
    let hello = true;
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        let code = `http_${res.statusCode}`;
        let message = body;
        try {
          ({ code, error: message } = JSON.parse(body));
        } catch {}
        this.fail(new StartRefused(code, message));
      });
    });
    ws.on("open", () => first && ws.send(first));
    ws.on("message", (data) => {
      const text = data.toString("utf8");
      if (hello) {
        const frame = JSON.parse(text);
        if (frame.type === "sdk_queued") return;
        if (frame.type === "error") {
          hello = false;
          return this.fail(new StartRefused(frame.data?.code, frame.data?.error));
        }
        if (frame.type === "sdk_started") {
          hello = false;
          this.sessionId = frame.session_id;
          if (!this.started) {
            this.started = true;
            this.onSession?.(this);
          }
          for (const line of this.waiting.splice(0)) ws.send(line);
          return;
        }
      }
      this.frames++;
      this.stdout.write(text + "\n");
    });
    ws.on("close", (code) => {
      if (ws !== this.ws || this.exitCode !== null) return;
      if (this.killed || code === 1000 || code === 1001 || code === 1008 || code === 1012) {
        return this.exit(code === 1000 ? 0 : 1);
      }
      this.resume();
    });
    ws.on("error", () => {}); // a close follows
  }

  resume() {
    if (!this.sessionId || this.resumes >= this.resumeAttempts) return this.exit(1);
    this.resumes++;
    const q = new URLSearchParams({ session_id: this.sessionId, last_frame: String(this.frames) });
    this.open(`${this.url}?${q}`, null);
  }

  send(line) {
    if (!this.ws) {
      this.waiting.push(line);
      return this.begin(line);
    }
    if (this.started && this.ws?.readyState === WebSocket.OPEN) this.ws.send(line);
    else this.waiting.push(line);
  }

  /** Cut the connection without a close frame, as a network failure would (it is
   * resumed). For tests and demonstrations. */
  abortConnection() {
    this.ws?._socket?.destroy();
  }

  fail(error) {
    if (this.exitCode !== null) return;
    // The SDK reports only "exited with code 1": the reason goes to stderr, and stays
    // on the process (`spawner.last.error`).
    this.error = error;
    console.error(`claude-ws-sdk: ${error.message}`);
    this.emit("error", error);
    this.exit(1);
  }

  exit(code) {
    if (this.exitCode !== null) return;
    this.exitCode = code;
    this.stdout.end();
    this.emit("exit", code, null);
  }

  kill(_signal) {
    if (this.exitCode !== null) return false;
    this.killed = true;
    this.ws?.close(1000);
    this.exit(0);
    return true;
  }
}
