//! The `claude-ws` command: flags and environment → [`Config`], logging, signals.

use std::io::Write;
use std::process::ExitCode;

use claude_ws::{Config, Invocation, Server};

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("claude-ws: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handler only sends on a channel; one thread turns that into shutdown.
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    }) {
        eprintln!("claude-ws: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let handle = server.handle();
    std::thread::spawn(move || {
        if rx.recv().is_ok() {
            handle.shutdown();
        }
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", server.ready_line());
    let _ = out.flush();
    server.run();
    ExitCode::SUCCESS
}
