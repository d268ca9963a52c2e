// One query over claude-ws: the protocol code of the JavaScript examples.
//
// It runs unchanged in a browser (examples/browser/index.html passes the global
// WebSocket) and in Node (examples/js/client.mjs passes the `ws` package's WebSocket;
// Node 20 has no global one). It uses only what both offer: `new WebSocket(url,
// protocols)`, `onopen`/`onmessage`/`onclose`/`onerror`, `send`, `close`.
//
// Every server message is {"type": ..., "seq": N, "data": {...}}.

/**
 * Connect, send `prompt`, stream the answer; resolves with the query's outcome
 * ("completed", "failed", "interrupted", "error"), or "closed" if the connection
 * ended first.
 *
 * @param {object} o
 * @param {typeof WebSocket} o.WebSocket  the WebSocket class to use
 * @param {string} o.url                   e.g. "ws://localhost:8000/ws"
 * @param {string} o.prompt
 * @param {string} [o.token]               sent as the subprotocol "bearer.<token>"
 *                                         (browsers cannot set an Authorization header)
 * @param {(text: string) => void} o.onText      the answer, piece by piece
 * @param {(line: string) => void} o.onStatus    connection, tools, cost, errors
 */
export function ask({ WebSocket, url, prompt, token, onText, onStatus }) {
  return new Promise((resolve) => {
    const protocols = token ? ["claude-ws", `bearer.${token}`] : [];
    const ws = new WebSocket(url, protocols);
    // Streamed text (`stream_event` deltas) comes before the whole message
    // (`assistant_message`); show the whole message only if it was not streamed.
    let streamed = false;
    let outcome = "closed";
    const send = (message) => ws.send(JSON.stringify(message));

    ws.onmessage = (event) => {
      const { type, data } = JSON.parse(event.data);
      switch (type) {
        case "connection_established":
          onStatus(`connected: session ${data.session_id}`);
          send({ type: "query", prompt, options: { include_partial_messages: true } });
          break;
        case "query_queued":
          onStatus(`queued: position ${data.position}`);
          break;
        case "stream_event": {
          const e = data.event;
          if (e.type === "content_block_delta" && e.delta.type === "text_delta") {
            onText(e.delta.text);
            streamed = true;
          }
          break;
        }
        case "assistant_message":
          for (const block of data.content) {
            if (block.type === "text" && !streamed) onText(block.text);
            if (block.type === "tool_use") {
              onStatus(`tool: ${block.name} ${JSON.stringify(block.input)}`);
            }
          }
          streamed = false;
          break;
        case "permission_request":
          // This client answers no prompts: deny, so the query goes on.
          onStatus(`permission: ${data.tool_name} denied`);
          send({
            type: "permission_response",
            request_id: data.request_id,
            behavior: "deny",
            message: "this client does not allow tools",
          });
          break;
        case "result_message":
          onStatus(
            `result: ${data.subtype}, cost $${(data.total_cost_usd ?? 0).toFixed(4)}, ` +
              `${data.duration_ms ?? 0} ms`,
          );
          break;
        case "error":
          onStatus(`error: ${data.code}: ${data.error}`);
          break;
        case "query_end":
          outcome = data.outcome;
          onStatus(`end: ${outcome}`);
          ws.close(1000); // a normal close ends the session (and its claude) now
          break;
      }
    };
    // A refused handshake (401, 403, ...) shows as an error, then a close.
    ws.onerror = () => onStatus(`connection error (${url})`);
    ws.onclose = (event) => {
      if (outcome === "closed") onStatus(`closed: ${event.code} ${event.reason}`);
      resolve(outcome);
    };
  });
}
