//! `mock-api`: the scripted Messages API of the tests as a standalone process, for
//! scripts/demo.sh and manual runs of the server against the real CLI.
//!
//! Usage: `mock-api [--port N]` (default 0: any free port). Prints exactly one line,
//! `mock-api url=http://127.0.0.1:PORT`, then serves until killed, or until stdin
//! reaches EOF when stdin is a pipe, socket or terminal. (A background job of a
//! non-interactive shell gets /dev/null as stdin: that does not stop it.)

#[path = "mock_api.rs"]
mod mock_api;

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;

fn main() {
    let port = parse_port(std::env::args().skip(1).collect());
    let api = mock_api::MockApi::start_on(port);
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "mock-api url={}", api.url()).expect("mock-api: cannot write stdout");
        stdout.flush().expect("mock-api: cannot flush stdout");
    }
    if stdin_can_close() {
        let mut sink = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        drop(api);
    } else {
        loop {
            std::thread::park();
        }
    }
}

/// `--port N` or `--port=N`; exits with a usage message on anything else.
fn parse_port(args: Vec<String>) -> u16 {
    let usage = |why: &str| -> ! {
        eprintln!("mock-api: {why}\nusage: mock-api [--port N]");
        std::process::exit(2)
    };
    let mut port = 0;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--port=") {
            Some(v) => v.to_string(),
            None if arg == "--port" => args.next().unwrap_or_else(|| usage("--port needs a value")),
            None => usage(&format!("unknown argument {arg:?}")),
        };
        port = value
            .parse()
            .unwrap_or_else(|_| usage(&format!("bad port {value:?}")));
    }
    port
}

/// Whether stdin is something whose closing means "stop" (a pipe, socket or terminal)
/// rather than /dev/null or a file, which are at EOF from the start.
fn stdin_can_close() -> bool {
    if std::io::stdin().is_terminal() {
        return true;
    }
    match std::fs::metadata("/proc/self/fd/0") {
        Ok(meta) => meta.file_type().is_fifo() || meta.file_type().is_socket(),
        Err(_) => false,
    }
}
