//! The `claude-ws` command: flags and environment → [`Config`], logging, signals.

use std::io::Write;
use std::process::ExitCode;

use claude_ws::config::LogFormat;
use claude_ws::{Config, Invocation, Server};

/// Exit status when a second SIGINT/SIGTERM cuts the graceful shutdown short
/// (128 + SIGINT, as shells report an interrupted command).
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Invocation::Run(c)) => *c,
        Ok(Invocation::Help(text)) | Ok(Invocation::Version(text)) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("claude-ws: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for flag in claude_ws::config::secrets_on_command_line(&args) {
        log::warn!(
            "{flag} was given on the command line, where every local user can read it \
             (/proc/PID/cmdline): use {flag}-file or its environment variable instead"
        );
    }
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handler only sends on a channel; one thread turns that into a drain
    // (see `server.rs`), then shutdown. Room for two, so a second signal is not lost
    // while the first is being handled. (ctrlc cannot tell SIGINT from SIGTERM: both
    // drain; with no query running the drain is immediate.)
    let (tx, rx) = crossbeam_channel::bounded::<()>(2);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    }) {
        log::error!("cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let handle = server.handle();
    std::thread::spawn(move || {
        if rx.recv().is_err() {
            return;
        }
        handle.drain();
        if rx.recv().is_ok() {
            // Children were started with a parent-death signal (SIGTERM), so they end
            // with this process; one that ignores SIGTERM is left to its fate.
            log::warn!(
                "second signal during the drain or shutdown: exiting now, without waiting \
                 for queries, sessions and children to stop"
            );
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", server.ready_line());
    let _ = out.flush();
    server.run();
    ExitCode::SUCCESS
}

/// Logs go to stderr, at `info` unless `RUST_LOG` says otherwise: as env_logger's text,
/// or one JSON object per line (`time`, `level`, `target`, `message`) for log shippers.
fn init_logging(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.target(env_logger::Target::Stderr);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "time": buf.timestamp().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}
