//! Tools a client defines and executes itself, and the MCP server through which the CLI
//! calls them.
//!
//! The CLI supports tools implemented by the program that drives it ("SDK MCP
//! servers", ../shared/claude-cli/README.md, transcript 09): a child started with
//! `--mcp-config {"mcpServers":{"ws":{"type":"sdk","name":"ws"}}}` and initialised with
//! `sdkMcpServers: ["ws"]` speaks MCP JSON-RPC to us inside `mcp_message` control
//! requests. `initialize`, `notifications/initialized` and `tools/list` are answered
//! here from the session's definitions; a `tools/call` becomes a `tool_call` to the
//! client, whose `tool_result` is the MCP result. The model sees each tool as
//! `mcp__ws__<name>`.

use serde_json::{json, Map, Value};

use crate::protocol::{ClientError, ErrorCode};

/// The name of our MCP server, as the CLI and the model see it.
pub const MCP_SERVER: &str = "ws";
/// The MCP protocol version we answer `initialize` with (the one the CLI asked for).
const MCP_VERSION: &str = "2025-11-25";
/// Most tools one session may define.
pub const MAX_TOOLS: usize = 64;
/// Longest tool name: the API allows 64 characters, of which `mcp__ws__` takes 9.
const MAX_NAME: usize = 64 - 9;
/// Longest description.
const MAX_DESCRIPTION: usize = 4096;
/// Largest input schema, as JSON text.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// A tool a client defined.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema of type `object`.
    pub input_schema: Value,
}

impl Tool {
    /// The tool as `tools_list` shows it.
    pub fn listing(&self, source: &str) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "source": source,
        })
    }

    /// The tool as the original protocol's registry stores it.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        })
    }
}

fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::new(ErrorCode::InvalidField, message)
}

/// Check a `define_tool`'s `tool`: a name, a description, and either `input_schema`
/// (a JSON Schema of type object) or `parameters` (the original protocol's shape:
/// `{"name": {"type": …, "required": true, …}, …}`), which is turned into one.
pub fn parse_definition(tool: Value) -> Result<Tool, ClientError> {
    let Value::Object(mut tool) = tool else {
        return Err(invalid("define_tool: \"tool\" must be an object"));
    };
    let name = match tool.remove("name") {
        Some(Value::String(n)) => n,
        _ => return Err(invalid("define_tool: \"tool.name\" must be a string")),
    };
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(format!(
            "define_tool: the tool name must be 1 to {MAX_NAME} letters, digits, '_' or '-'"
        )));
    }
    let description = match tool.remove("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) if d.len() <= MAX_DESCRIPTION => d,
        Some(_) => {
            return Err(invalid(format!(
            "define_tool: \"tool.description\" must be a string of at most {MAX_DESCRIPTION} bytes"
        )))
        }
    };
    let input_schema = match (tool.remove("input_schema"), tool.remove("parameters")) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "define_tool: give \"input_schema\" or \"parameters\", not both",
            ))
        }
        (Some(schema), None) => check_schema(schema)?,
        (None, Some(parameters)) => from_parameters(parameters)?,
        (None, None) => json!({"type": "object", "properties": {}}),
    };
    if let Some(extra) = tool.keys().next() {
        return Err(invalid(format!(
            "define_tool: unknown field \"tool.{}\"",
            crate::util::truncate(extra, 64)
        )));
    }
    if input_schema.to_string().len() > MAX_SCHEMA_BYTES {
        return Err(invalid(format!(
            "define_tool: the input schema is larger than {MAX_SCHEMA_BYTES} bytes"
        )));
    }
    Ok(Tool {
        name,
        description,
        input_schema,
    })
}

/// A tool as a registry lists it: checked as a definition, its other fields (an id, a
/// date, …) ignored.
pub fn parse_registry_tool(tool: Value) -> Result<Tool, ClientError> {
    let Value::Object(mut m) = tool else {
        return Err(invalid("a registry tool must be an object"));
    };
    m.retain(|k, _| {
        matches!(
            k.as_str(),
            "name" | "description" | "input_schema" | "parameters"
        )
    });
    parse_definition(Value::Object(m))
}

/// An `input_schema` must describe an object (MCP tools take named arguments).
fn check_schema(schema: Value) -> Result<Value, ClientError> {
    let ok = schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("properties").is_none_or(Value::is_object)
        && schema
            .get("required")
            .is_none_or(|r| r.as_array().is_some_and(|a| a.iter().all(Value::is_string)));
    if ok {
        Ok(schema)
    } else {
        Err(invalid(
            "define_tool: \"input_schema\" must be a JSON Schema with \"type\": \"object\" \
             (\"properties\" an object, \"required\" an array of names)",
        ))
    }
}

/// The original protocol's `parameters` as a JSON Schema: each member names a
/// property; its `required: true` moves to the schema's `required` list.
fn from_parameters(parameters: Value) -> Result<Value, ClientError> {
    let Value::Object(parameters) = parameters else {
        return Err(invalid(
            "define_tool: \"parameters\" must be an object of {name: {\"type\": …}}",
        ));
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, spec) in parameters {
        let Value::Object(mut spec) = spec else {
            return Err(invalid(format!(
                "define_tool: parameter {:?} must be an object such as {{\"type\": \"string\"}}",
                crate::util::truncate(&name, 64)
            )));
        };
        match spec.remove("required") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => required.push(Value::String(name.clone())),
            Some(_) => {
                return Err(invalid(format!(
                    "define_tool: parameter {:?}: \"required\" must be true or false",
                    crate::util::truncate(&name, 64)
                )))
            }
        }
        if spec
            .get("type")
            .is_some_and(|t| !t.is_string() && !t.is_array())
        {
            return Err(invalid(format!(
                "define_tool: parameter {:?}: \"type\" must be a JSON Schema type name",
                crate::util::truncate(&name, 64)
            )));
        }
        properties.insert(name, Value::Object(spec));
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    Ok(schema)
}

/// The tools one session can offer the model: those its client defined, in the order
/// defined (a redefinition replaces), then those the tool registry listed last.
#[derive(Debug, Default)]
pub struct Tools {
    defined: Vec<Tool>,
    from_registry: Vec<Tool>,
}

impl Tools {
    /// Add or replace a tool.
    pub fn define(&mut self, tool: Tool) -> Result<(), ClientError> {
        if let Some(t) = self.defined.iter_mut().find(|t| t.name == tool.name) {
            *t = tool;
            return Ok(());
        }
        if self.defined.len() >= MAX_TOOLS {
            return Err(invalid(format!(
                "define_tool: a session may define at most {MAX_TOOLS} tools"
            )));
        }
        self.defined.push(tool);
        Ok(())
    }

    /// Take the registry's tools (the client runs them too); a tool the session
    /// defined itself keeps its own definition.
    pub fn set_registry(&mut self, mut tools: Vec<Tool>) {
        tools.retain(|t| !self.defined.iter().any(|d| d.name == t.name));
        tools.truncate(MAX_TOOLS);
        self.from_registry = tools;
    }

    pub fn is_empty(&self) -> bool {
        self.defined.is_empty() && self.from_registry.is_empty()
    }

    /// Every tool, the session's own first.
    pub fn iter(&self) -> impl Iterator<Item = &Tool> {
        self.defined.iter().chain(&self.from_registry)
    }

    /// Every tool as `tools_list` shows it.
    pub fn listing(&self) -> Vec<Value> {
        let own = self.defined.iter().map(|t| t.listing("session"));
        own.chain(self.from_registry.iter().map(|t| t.listing("registry")))
            .collect()
    }

    /// The names the model and `--allowedTools` know them by.
    pub fn cli_names(&self) -> Vec<String> {
        self.iter()
            .map(|t| format!("mcp__{MCP_SERVER}__{}", t.name))
            .collect()
    }
}

/// `--mcp-config`'s value for a child with client tools. `alwaysLoad` keeps the tools
/// out of tool search on CLIs that defer MCP tools behind it (2.1.332 offers the model
/// `ToolSearch` instead of `mcp__ws__<name>` without it); older CLIs (2.1.197, checked)
/// accept the key and change nothing, so one entry serves every supported version
/// (docs/cli-versions.md).
pub fn mcp_config() -> String {
    mcp_config_for(&[MCP_SERVER])
}

/// `--mcp-config`'s value naming in-process (`sdk`) servers of the client: `/ws`'s own
/// `ws`, or an `/sdk` client's `sdk_mcp_servers`.
pub fn mcp_config_for<S: AsRef<str>>(names: &[S]) -> String {
    let servers: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| {
            let n = n.as_ref();
            (
                n.to_string(),
                json!({"type": "sdk", "name": n, "alwaysLoad": true}),
            )
        })
        .collect();
    json!({ "mcpServers": servers }).to_string()
}

/// What an `mcp_message` asks of us.
#[derive(Debug, PartialEq)]
pub enum Mcp {
    /// Answer the CLI at once with this `mcp_response`.
    Reply(Value),
    /// A `tools/call` of a defined tool: ask the client; `id` is the JSON-RPC id.
    Call {
        id: Value,
        name: String,
        input: Value,
    },
}

/// Handle one MCP JSON-RPC message from the CLI.
pub fn handle_mcp(tools: &Tools, message: &Value) -> Mcp {
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    let result = |result: Value| match &id {
        Some(id) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        None => json!({"jsonrpc": "2.0", "result": result}),
    };
    match method {
        "initialize" => Mcp::Reply(result(json!({
            "protocolVersion": message
                .pointer("/params/protocolVersion")
                .cloned()
                .unwrap_or_else(|| MCP_VERSION.into()),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": MCP_SERVER, "version": env!("CARGO_PKG_VERSION")},
        }))),
        "tools/list" => Mcp::Reply(result(json!({
            "tools": tools.iter().map(|t| json!({
                "name": t.name,
                "description": t.description,
                "inputSchema": t.input_schema,
            })).collect::<Vec<_>>(),
        }))),
        "tools/call" => {
            let name = message
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            match (&id, tools.iter().find(|t| t.name == name)) {
                (Some(id), Some(_)) => Mcp::Call {
                    id: id.clone(),
                    name: name.to_string(),
                    input: message
                        .pointer("/params/arguments")
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                },
                _ => Mcp::Reply(call_result(
                    id.unwrap_or(Value::Null),
                    json!(format!("no tool named {name:?} is defined in this session")),
                    true,
                )),
            }
        }
        // Notifications (no id) need only an acknowledgement.
        m if m.starts_with("notifications/") => Mcp::Reply(result(json!({}))),
        other => Mcp::Reply(match &id {
            Some(id) => json!({
                "jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {other}")},
            }),
            None => json!({"jsonrpc": "2.0", "result": {}}),
        }),
    }
}

/// The MCP result of a tool call: `content` a string or content blocks.
pub fn call_result(id: Value, content: Value, is_error: bool) -> Value {
    let blocks = match content {
        Value::String(text) => json!([{"type": "text", "text": text}]),
        Value::Array(blocks) => Value::Array(blocks),
        other => json!([{"type": "text", "text": other.to_string()}]),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": blocks, "isError": is_error}})
}

/// Check a `tool_result`'s `content`: a string, or an array of content blocks (each
/// an object with a string `type`).
pub fn check_content(content: &Value) -> Result<(), ClientError> {
    let ok = match content {
        Value::String(_) => true,
        Value::Array(blocks) => blocks
            .iter()
            .all(|b| b.get("type").is_some_and(Value::is_string)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "tool_result: \"content\" must be a string or an array of content blocks",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_parameters_shape_becomes_a_schema() {
        let t = parse_definition(json!({
            "name": "CustomFormatter",
            "description": "Formats text",
            "parameters": {
                "text": {"type": "string", "required": true},
                "style": {"type": "string", "enum": ["bold", "italic"]}
            }
        }))
        .unwrap();
        assert_eq!(
            t.input_schema,
            json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "style": {"type": "string", "enum": ["bold", "italic"]}
                },
                "required": ["text"]
            })
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_invalid_field() {
        for bad in [
            json!("x"),
            json!({"name": ""}),
            json!({"name": "has space"}),
            json!({"name": "x".repeat(56)}),
            json!({"name": "t", "input_schema": {"type": "string"}}),
            json!({"name": "t", "input_schema": {"type": "object"}, "parameters": {}}),
            json!({"name": "t", "parameters": {"a": 1}}),
            json!({"name": "t", "parameters": {"a": {"required": "yes"}}}),
            json!({"name": "t", "colour": 1}),
            json!({"name": "t", "description": 5}),
        ] {
            let e = parse_definition(bad.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{bad}");
        }
        assert!(parse_definition(json!({"name": "x".repeat(55)})).is_ok());
    }

    #[test]
    fn mcp_messages_are_answered_as_in_transcript_09() {
        let mut tools = Tools::default();
        tools
            .define(parse_definition(json!({"name": "Fmt", "description": "d"})).unwrap())
            .unwrap();
        let Mcp::Reply(r) = handle_mcp(
            &tools,
            &json!({"method":"initialize","params":{"protocolVersion":"2025-11-25"},"jsonrpc":"2.0","id":0}),
        ) else {
            panic!()
        };
        assert_eq!(r["id"], 0);
        assert_eq!(r["result"]["capabilities"], json!({"tools": {}}));
        let Mcp::Reply(r) = handle_mcp(
            &tools,
            &json!({"method":"tools/list","jsonrpc":"2.0","id":1}),
        ) else {
            panic!()
        };
        assert_eq!(r["result"]["tools"][0]["name"], "Fmt");
        assert_eq!(
            r["result"]["tools"][0]["inputSchema"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            handle_mcp(
                &tools,
                &json!({"method":"notifications/initialized","jsonrpc":"2.0"})
            ),
            Mcp::Reply(json!({"jsonrpc": "2.0", "result": {}}))
        );
        assert_eq!(
            handle_mcp(
                &tools,
                &json!({"method":"tools/call","params":{"name":"Fmt","arguments":{"a":1}},"jsonrpc":"2.0","id":2})
            ),
            Mcp::Call {
                id: json!(2),
                name: "Fmt".into(),
                input: json!({"a": 1})
            }
        );
        // An unknown tool is an error result, not a hung call.
        let Mcp::Reply(r) = handle_mcp(
            &tools,
            &json!({"method":"tools/call","params":{"name":"Nope"},"jsonrpc":"2.0","id":3}),
        ) else {
            panic!()
        };
        assert_eq!(r["result"]["isError"], true);
        assert_eq!(tools.cli_names(), vec!["mcp__ws__Fmt".to_string()]);
    }

    #[test]
    fn redefining_replaces_and_the_count_is_bounded() {
        let mut tools = Tools::default();
        for i in 0..MAX_TOOLS {
            tools
                .define(parse_definition(json!({"name": format!("t{i}")})).unwrap())
                .unwrap();
        }
        tools
            .define(parse_definition(json!({"name": "t0", "description": "new"})).unwrap())
            .unwrap();
        assert_eq!(tools.iter().next().unwrap().description, "new");
        assert!(tools
            .define(parse_definition(json!({"name": "one-more"})).unwrap())
            .is_err());
    }
}
