//! Where a principal's children work and what their sandbox lets them write: with the
//! sandbox on, each principal has a workspace of its own under every workspace root,
//! `<root>/<principal dir>/` (the same hashed name as its state directory, created
//! 0700 on first use), and a client's `cwd` is resolved inside it.
//! `--shared-workspace` keeps the roots themselves, for everybody.

use std::path::{Path, PathBuf};

use crate::protocol::{ClientError, ErrorCode, QueryOptions};
use crate::spec;
use crate::state::Shared;
use crate::tools::Tools;

/// The spec of a child of `principal` for `options` (`/ws` and `/sdk` alike): the
/// policy's checks (`spec::build`), the principal's own CLI state directory, workspace
/// and sandbox.
pub fn child_spec(
    shared: &Shared,
    principal: &str,
    state_dir: Option<&Path>,
    options: &QueryOptions,
    tools: &Tools,
) -> Result<spec::ChildPlan, ClientError> {
    let roots = roots(shared, principal)?;
    let mut spec = spec::build(&shared.config, &shared.child_env, options, tools, &roots)?;
    if let Some(dir) = state_dir {
        spec.env.retain(|(k, _)| k != "CLAUDE_CONFIG_DIR");
        spec.env
            .push(("CLAUDE_CONFIG_DIR".into(), dir.display().to_string()));
    }
    enclose(shared, &mut spec, state_dir, &roots)?;
    Ok(spec)
}

/// `resume` may name this server's session id: it means that session's conversation,
/// if it is the same principal's (listed, or recorded in its state directory).
pub fn own_conversation(
    shared: &Shared,
    principal: &str,
    state_dir: Option<&Path>,
    mut options: QueryOptions,
) -> QueryOptions {
    if let Some(id) = &options.resume {
        let known = shared
            .registry
            .conversation_of(id, principal)
            .or_else(|| crate::conversations::recorded_conversation(state_dir?, id));
        if let Some(conversation) = known {
            options.resume = Some(conversation);
        }
    }
    options
}

/// The workspace roots `principal`'s `cwd` must be inside, the first its default.
pub fn roots(shared: &Shared, principal: &str) -> Result<Vec<PathBuf>, ClientError> {
    let roots = &shared.config.workspace_roots;
    if shared.sandbox.is_none() || shared.config.shared_workspace {
        return Ok(roots.clone());
    }
    roots
        .iter()
        .map(|root| {
            let own = spec::principal_dir(root, principal);
            spec::create_private_dir(&own).map_err(|e| {
                log::warn!("cannot create the workspace {}: {e}", own.display());
                ClientError::new(
                    ErrorCode::CwdNotAllowed,
                    "your workspace cannot be created on the server",
                )
            })?;
            Ok(own)
        })
        .collect()
}

/// Put `spec` (built with `roots`) in the principal's sandbox, when there is one: it
/// may write its state directory and its workspaces.
pub fn enclose(
    shared: &Shared,
    spec: &mut spec::ChildPlan,
    state_dir: Option<&Path>,
    roots: &[PathBuf],
) -> Result<(), ClientError> {
    let (Some(sandbox), Some(state_dir)) = (&shared.sandbox, state_dir) else {
        return Ok(());
    };
    // bwrap binds only what exists; the CLI would create it, but inside the sandbox.
    spec::create_private_dir(state_dir).map_err(|e| {
        log::warn!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        );
        ClientError::new(
            ErrorCode::ClaudeSpawnFailed,
            "your state directory cannot be created on the server",
        )
    })?;
    spec.sandbox = Some(crate::sandbox::Jail::new(sandbox.clone(), state_dir, roots));
    Ok(())
}
