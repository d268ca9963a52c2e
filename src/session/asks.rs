//! The CLI's questions and the client's part in the agent loop: permission prompts,
//! calls of client-defined tools (and the tool registry), live settings.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::Session;
use crate::cli;
use crate::pending::{Ask, Unanswered};
use crate::protocol::{Behavior, ClientError, ErrorCode, ServerMessage, Setting};
use crate::spec::{self, with_settings};
use crate::tool_registry;
use crate::tools::{self, Mcp};

/// Tool-registry requests one session may have under way.
pub(super) const MAX_REGISTRY_REQUESTS: usize = 4;

impl Session<'_> {
    /// The CLI asks its driver something and waits for the answer: a permission prompt
    /// or a call of a client-defined tool goes to the client; anything else is refused.
    pub(super) fn on_control_request(&mut self, request_id: Value, request: Map<String, Value>) {
        let subtype = request.get("subtype").and_then(Value::as_str).unwrap_or("");
        let config = &self.shared.config;
        let now = Instant::now();
        match (subtype, request_id.as_str()) {
            ("can_use_tool", Some(id)) => {
                let field = |k: &str| request.get(k).cloned().unwrap_or(Value::Null);
                let input = field("input");
                let message = ServerMessage::PermissionRequest {
                    request_id: id.to_string(),
                    tool_name: field("tool_name"),
                    input: input.clone(),
                    tool_use_id: field("tool_use_id"),
                    suggestions: request
                        .get("permission_suggestions")
                        .cloned()
                        .unwrap_or_else(|| json!([])),
                };
                log::info!("[{}] permission prompt {id}", self.label);
                let deadline = now + config.timeouts.permission_timeout;
                self.pending.add(
                    id.to_string(),
                    Ask::Permission { input },
                    deadline,
                    message.clone(),
                    self.seq + 1,
                );
                self.send(message);
            }
            ("mcp_message", Some(id))
                if request.get("server_name").and_then(Value::as_str)
                    == Some(tools::MCP_SERVER) =>
            {
                let message = request.get("message").cloned().unwrap_or(Value::Null);
                match tools::handle_mcp(&self.tools, &message) {
                    Mcp::Reply(reply) => {
                        self.answer_cli(&request_id, json!({"mcp_response": reply}));
                    }
                    Mcp::Call {
                        id: rpc,
                        name,
                        input,
                    } => {
                        log::info!("[{}] tool call {id}: {name}", self.label);
                        let message = ServerMessage::ToolCall {
                            call_id: id.to_string(),
                            name,
                            input,
                        };
                        let deadline = now + config.timeouts.tool_timeout;
                        self.pending.add(
                            id.to_string(),
                            Ask::ToolCall { id: rpc },
                            deadline,
                            message.clone(),
                            self.seq + 1,
                        );
                        self.send(message);
                    }
                }
            }
            _ => self.refuse_control_request(request_id, subtype),
        }
    }

    /// The CLI withdrew a question it asked (`control_cancel_request`): tell the client
    /// it need not answer, the same way it was asked. A question answered already, or
    /// a request that never reached the client, needs nothing.
    pub(super) fn on_cancel_request(&mut self, request_id: &str) {
        let message = match self.pending.withdraw(request_id) {
            Some(Ask::Permission { .. }) => ServerMessage::PermissionCancelled {
                request_id: request_id.to_string(),
            },
            Some(Ask::ToolCall { .. }) => ServerMessage::ToolCallCancelled {
                call_id: request_id.to_string(),
            },
            None => {
                log::debug!("[{}] the CLI cancelled {request_id}", self.label);
                return;
            }
        };
        log::info!("[{}] the CLI withdrew {request_id}", self.label);
        self.send(message);
    }

    /// The CLI answered a control request of ours (only live settings wait for one).
    pub(super) fn on_control_response(&mut self, request_id: &str, error: Option<String>) {
        let Some(i) = self
            .settings_sent
            .iter()
            .position(|(id, _)| id == request_id)
        else {
            return;
        };
        let (_, setting) = self.settings_sent.remove(i);
        match error {
            None => {
                // The live child now runs as a child built with the new setting would:
                // the next query with the same options keeps it.
                if self.seat.last_plan().is_some() {
                    let options = with_settings(self.last_options.clone(), &self.settings);
                    if let Ok(plan) = self.spec_for(&options) {
                        self.seat.replan(plan);
                        self.last_options = options;
                    }
                }
                self.send(ServerMessage::SettingsUpdated {
                    setting: setting.name(),
                    value: setting.value(),
                    applied: "live",
                });
            }
            Some(e) => self.send_error(ClientError::new(
                ErrorCode::SettingFailed,
                format!("claude refused {}: {e}", setting.name()),
            )),
        }
    }

    /// Send the CLI a successful `control_response`.
    pub(super) fn answer_cli(&self, request_id: &Value, response: Value) {
        if let Some(c) = self.seat.live() {
            let _ = c
                .child
                .send_line(&cli::control_success(request_id, response));
        }
    }

    /// Answer for the client the questions that are overdue (`now`) or all of them.
    pub(super) fn refuse_pending(&mut self, now: Option<Instant>, why: Unanswered) {
        for (id, response) in self.pending.refuse(now, why) {
            log::info!("[{}] answered {id} for the client: {why:?}", self.label);
            self.answer_cli(&Value::String(id), response);
        }
    }

    pub(super) fn permission_response(
        &mut self,
        request_id: &str,
        behavior: Behavior,
        updated_input: Option<Map<String, Value>>,
        message: Option<String>,
    ) {
        match self
            .pending
            .answer_permission(request_id, behavior, updated_input, message)
        {
            Some((id, response)) => {
                let viewer = self.speaker;
                log::info!(
                    "[{}] permission {id}: {behavior:?} (viewer {viewer})",
                    self.label
                );
                self.answer_cli(&Value::String(id.clone()), response);
                if self.viewers.len() > 1 {
                    self.send(ServerMessage::PermissionResolved {
                        request_id: id,
                        behavior,
                        viewer,
                    });
                }
            }
            None => self.send_error(ClientError::new(
                ErrorCode::UnknownRequest,
                format!(
                    "no permission request {:?} is waiting (unknown, answered already, or timed out)",
                    crate::util::truncate(request_id, 64)
                ),
            )),
        }
    }

    pub(super) fn tool_result(&mut self, call_id: &str, content: Value, is_error: bool) {
        if let Err(e) = tools::check_content(&content) {
            return self.send_error(e);
        }
        match self.pending.answer_tool_call(call_id, content, is_error) {
            Some((id, response)) => {
                self.answer_cli(&Value::String(id.clone()), response);
                if self.viewers.len() > 1 {
                    let viewer = self.speaker;
                    self.send(ServerMessage::ToolCallResolved {
                        call_id: id,
                        is_error,
                        viewer,
                    });
                }
            }
            None => self.send_error(ClientError::new(
                ErrorCode::UnknownRequest,
                format!(
                    "no tool call {:?} is waiting (unknown, answered already, or timed out)",
                    crate::util::truncate(call_id, 64)
                ),
            )),
        }
    }

    pub(super) fn define_tool(&mut self, tool: Value) {
        let tool = match tools::parse_definition(tool).and_then(|t| {
            self.tools.define(t.clone())?;
            Ok(t)
        }) {
            Ok(t) => t,
            Err(e) => return self.send_error(e),
        };
        log::info!("[{}] tool defined: {}", self.label, tool.name);
        match self.registry_url() {
            // Answered when the registry has (or has not) stored it too.
            Some(url) => tool_registry::store(&url, &tool, &self.id, self.registry.0.clone()),
            None => self.send(ServerMessage::ToolDefined {
                tool_name: tool.name,
                status: "success",
                tool_id: None,
            }),
        }
    }

    pub(super) fn get_tools(&mut self) {
        match self.registry_url() {
            Some(url) => tool_registry::list(&url, self.registry.0.clone()),
            None => self.send(ServerMessage::ToolsList {
                tools: self.tools.listing(),
                source: "session",
            }),
        }
    }

    /// The registry's URL, counting a request to it; `None` without a registry or
    /// when too many requests are under way (which says so).
    pub(super) fn registry_url(&mut self) -> Option<String> {
        let url = self.shared.config.tool_registry_url.clone()?;
        if self.registry_requests >= MAX_REGISTRY_REQUESTS {
            self.send_error(ClientError::new(
                ErrorCode::ToolRegistryError,
                format!(
                    "{MAX_REGISTRY_REQUESTS} tool-registry requests are under way; \
                     answered from this session alone"
                ),
            ));
            return None;
        }
        self.registry_requests += 1;
        Some(url)
    }

    pub(super) fn on_registry_reply(&mut self, reply: tool_registry::Reply) {
        self.registry_requests = self.registry_requests.saturating_sub(1);
        let registry_error = |e: String| {
            ClientError::new(ErrorCode::ToolRegistryError, format!("tool registry: {e}"))
        };
        match reply {
            tool_registry::Reply::Stored { tool, result } => {
                let tool_id = match result {
                    Ok(id) => id,
                    Err(e) => {
                        log::warn!("[{}] tool registry: {e}", self.label);
                        self.send_error(registry_error(format!(
                            "{tool} is defined for this session but was not stored: {e}"
                        )));
                        None
                    }
                };
                self.send(ServerMessage::ToolDefined {
                    tool_name: tool,
                    status: "success",
                    tool_id,
                });
            }
            tool_registry::Reply::Listed { result } => {
                let source = match result {
                    Ok(tools) => {
                        self.tools.set_registry(tools);
                        "session+registry"
                    }
                    Err(e) => {
                        log::warn!("[{}] tool registry: {e}", self.label);
                        self.send_error(registry_error(format!(
                            "cannot list the registry's tools: {e}"
                        )));
                        "session"
                    }
                };
                self.send(ServerMessage::ToolsList {
                    tools: self.tools.listing(),
                    source,
                });
            }
        }
    }

    /// Change a setting: checked as the query option would be, remembered for later
    /// queries, and switched live when a child runs.
    pub(super) fn set(&mut self, setting: Setting) {
        let checked = match &setting {
            Setting::PermissionMode(m) => spec::permission_mode(&self.shared.config, m).map(drop),
            Setting::Model(m) => spec::model_name(m).map(drop),
            Setting::MaxThinkingTokens(_) => Ok(()),
        };
        if let Err(e) = checked {
            return self.send_error(e);
        }
        match &setting {
            Setting::PermissionMode(m) => self.settings.permission_mode = Some(m.clone()),
            Setting::Model(m) => self.settings.model = Some(m.clone()),
            Setting::MaxThinkingTokens(n) => self.settings.max_thinking_tokens = Some(*n),
        }
        let Some(c) = self.seat.live() else {
            return self.send(ServerMessage::SettingsUpdated {
                setting: setting.name(),
                value: setting.value(),
                applied: "next_query",
            });
        };
        let id = format!("claude_ws_set_{}", self.seq);
        match c.child.send_line(&cli::setting(&id, &setting)) {
            Ok(()) => self.settings_sent.push((id, setting)),
            Err(_) => self.send_error(ClientError::new(
                ErrorCode::ClaudeBusy,
                "claude is not reading its input; the setting applies from the next query",
            )),
        }
    }

    /// The CLI asked something this server does not answer (it only asks when started
    /// with flags the server never passes); say so, so it does not wait forever.
    pub(super) fn refuse_control_request(&mut self, request_id: Value, subtype: &str) {
        log::warn!(
            "[{}] claude sent an unsupported control request {:?}",
            self.label,
            subtype.escape_debug().to_string()
        );
        if let Some(c) = self.seat.live() {
            let _ = c.child.send_line(&cli::control_error(
                &request_id,
                &format!("claude-ws does not support control request {subtype:?}"),
            ));
        }
    }
}
