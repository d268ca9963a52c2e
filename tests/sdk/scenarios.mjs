// The real @anthropic-ai/claude-agent-sdk through examples/js/claude-ws-sdk.mjs against a
// live claude-ws (/sdk), the real CLI and the scripted model. Driven by tests/sdk.rs:
// `node scenarios.mjs NAME`; exit 0 and a last line `ok` when the scenario held.
// Environment: SDK_URL, SDK_TOKEN (optional), SDK_WORK (the server's workspace).

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const examples = fileURLToPath(new URL("../../examples/js/", import.meta.url));
const require = createRequire(join(examples, "package.json"));
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { query, createSdkMcpServer, tool } = await load("@anthropic-ai/claude-agent-sdk");
const { z } = await load("zod");
const { claudeWsSpawner, StartRefused } = await import(pathToFileURL(join(examples, "claude-ws-sdk.mjs")).href);

const URL_ = process.env.SDK_URL;
const TOKEN = process.env.SDK_TOKEN || undefined;
const WORK = process.env.SDK_WORK || ".";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${typeof what === "string" ? what : JSON.stringify(what)}`);
}

/** A conversation: `turn(text)` sends a prompt and collects up to its result. */
function conversation(options = {}, { token = TOKEN } = {}) {
  const prompts = [];
  let wake = null;
  let closed = false;
  async function* input() {
    while (true) {
      while (prompts.length) yield prompts.shift();
      if (closed) return;
      await new Promise((r) => (wake = r));
    }
  }
  const state = { transport: null };
  const spawner = claudeWsSpawner(URL_, { token, onSession: (t) => (state.transport = t) });
  state.spawner = spawner;
  const q = query({
    prompt: input(),
    options: {
      ...options,
      spawnClaudeCodeProcess: spawner,
      pathToClaudeCodeExecutable: "claude-ws",
    },
  });
  const it = q[Symbol.asyncIterator]();
  return {
    q,
    state,
    send(text) {
      prompts.push({ type: "user", message: { role: "user", content: text }, parent_tool_use_id: null, session_id: "" });
      wake?.();
    },
    async next() {
      const r = await it.next();
      if (r.done) throw new Error("the stream ended");
      return r.value;
    },
    /** The reason the session was refused (the first message must fail). */
    async refusal() {
      try {
        while ((await this.next()).type !== "result");
      } catch (e) {
        return String(state.spawner.last?.error?.message ?? e?.message ?? e);
      }
      throw new Error("the session was not refused");
    },
    async turn(text, onMessage) {
      this.send(text);
      const messages = [];
      while (true) {
        const m = await this.next();
        messages.push(m);
        await onMessage?.(m);
        if (m.type === "result") break;
      }
      const texts = messages
        .filter((m) => m.type === "assistant")
        .flatMap((m) => m.message.content.filter((b) => b.type === "text").map((b) => b.text));
      return { text: texts.join(""), result: messages.at(-1), messages };
    },
    close() {
      closed = true;
      wake?.();
      q.close?.();
    },
  };
}

const scenarios = {
  async query_and_follow_up() {
    const c = conversation();
    let { text } = await c.turn("hello from the sdk");
    check(text.includes("Echo: hello from the sdk"), text);
    ({ text } = await c.turn("recall"));
    check(text.includes("hello from the sdk") && text.includes("recall"), `context lost: ${text}`);
    c.close();
  },

  async can_use_tool() {
    const asked = [];
    const c = conversation({
      permissionMode: "default",
      canUseTool: async (name, input) => {
        asked.push(name);
        return input.file_path.endsWith("allowed.txt")
          ? { behavior: "allow", updatedInput: input }
          : { behavior: "deny", message: "not this one" };
      },
    });
    await c.turn(`write ${join(WORK, "allowed.txt")} yes`);
    await c.turn(`write ${join(WORK, "denied.txt")} no`);
    c.close();
    check(JSON.stringify(asked) === '["Write","Write"]', asked);
    check(readFileSync(join(WORK, "allowed.txt"), "utf8") === "yes", "the allowed Write did not run");
    check(!existsSync(join(WORK, "denied.txt")), "the denied Write ran");
  },

  async hook_denies_bash() {
    const seen = [];
    const marker = join(WORK, "hook-marker");
    const c = conversation({
      allowedTools: ["Bash"],
      hooks: {
        PreToolUse: [{
          matcher: "Bash",
          hooks: [async (input) => {
            seen.push(input.tool_input.command);
            return { hookSpecificOutput: { hookEventName: "PreToolUse", permissionDecision: "deny", permissionDecisionReason: "no commands today" } };
          }],
        }],
      },
    });
    const { text } = await c.turn(`bash touch ${marker}`);
    c.close();
    check(JSON.stringify(seen) === JSON.stringify([`touch ${marker}`]), seen);
    check(text.includes("no commands today"), `the denial did not reach the model: ${text}`);
    check(!existsSync(marker), "the Bash command ran despite the hook");
  },

  async mcp_tool() {
    const calls = [];
    const add = tool("add", "Add two numbers", { a: z.number(), b: z.number() }, async (args) => {
      calls.push(args);
      return { content: [{ type: "text", text: `sum=${args.a + args.b}` }] };
    });
    const calc = createSdkMcpServer({ name: "calc", version: "1.0.0", tools: [add] });
    const c = conversation({ mcpServers: { calc }, allowedTools: ["mcp__calc__add"] });
    const { text } = await c.turn('tool mcp__calc__add {"a": 2, "b": 3}');
    c.close();
    check(JSON.stringify(calls) === '[{"a":2,"b":3}]', calls);
    check(text.includes("Done: sum=5"), `the tool's result did not reach the model: ${text}`);
  },

  async interrupt() {
    const c = conversation({ includePartialMessages: true });
    let events = 0;
    const { result } = await c.turn("slow 200 50", async (m) => {
      if (m.type === "stream_event" && ++events === 5) await c.q.interrupt();
    });
    check(result.type === "result" && events >= 5 && events < 150, { events, result: result.subtype });
    const { text } = await c.turn("after the interrupt");
    check(text.includes("Echo: after the interrupt"), text);
    c.close();
  },

  async set_model() {
    const c = conversation();
    await c.turn("first");
    await c.q.setModel("claude-haiku-4-5");
    const { messages } = await c.turn("second");
    c.close();
    const models = messages.filter((m) => m.type === "assistant").map((m) => m.message.model);
    check(models.length && models.every((m) => m === "claude-haiku-4-5"), models);
  },

  async refused_start() {
    const c = conversation({ permissionMode: "bypassPermissions" });
    c.send("hello");
    const why = await c.refusal();
    check(why.includes("permission_mode_not_allowed"), why);
    c.close();
  },

  async refused_set_permission_mode() {
    const c = conversation();
    await c.turn("first");
    const refused = await c.q.setPermissionMode("bypassPermissions").then(
      () => "accepted",
      (e) => String(e?.message ?? e),
    );
    check(refused.includes("not allowed"), refused);
    await c.q.setPermissionMode("acceptEdits");
    const { text } = await c.turn("still here");
    check(text.includes("Echo: still here"), text);
    c.close();
  },

  async authentication() {
    for (const token of [null, "wrong-token"]) {
      const c = conversation({}, { token });
      c.send("hello");
      const why = await c.refusal();
      check(why.includes("unauthorized"), why);
      c.close();
    }
    const c = conversation();
    const { text } = await c.turn("with the token");
    check(text.includes("Echo: with the token"), text);
    c.close();
  },

  async resume() {
    const c = conversation({ includePartialMessages: true });
    const deltas = [];
    await c.turn("slow 40 40", async (m) => {
      if (m.type === "stream_event" && m.event.type === "content_block_delta") {
        deltas.push(m.event.delta.text);
        if (deltas.length === 5) c.state.transport.abortConnection();
      }
    });
    const expected = Array.from({ length: 40 }, (_, i) => `word${i} `);
    check(JSON.stringify(deltas) === JSON.stringify(expected), `lost or repeated frames: ${deltas}`);
    check(c.state.transport.resumes === 1, c.state.transport.resumes);
    const { text } = await c.turn("recall");
    check(text.includes("slow 40 40"), text);
    c.close();
  },
};

const name = process.argv[2];
const timer = setTimeout(() => {
  console.error(`scenario ${name} timed out`);
  process.exit(2);
}, 120_000);
try {
  await scenarios[name]();
  console.log("ok");
  clearTimeout(timer);
  process.exit(0);
} catch (e) {
  console.error(e);
  process.exit(1);
}
