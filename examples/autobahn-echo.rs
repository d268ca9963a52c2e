//! An echo server on claude-ws's own link code (handshake, reads, back-pressure, frame
//! writing, close), for the Autobahn|Testsuite fuzzing client: `scripts/autobahn.sh`
//! runs it.
//!
//! Usage: `autobahn-echo 127.0.0.1:PORT` — serves `ws://127.0.0.1:PORT/ws`, echoing
//! text as text and binary as binary, each connection on its own thread (as the
//! server does), with the server's default message size limit. Port 0 picks a free
//! one; the first line printed says which (`autobahn-echo listening on ws://…/ws`).

use std::net::TcpListener;
use std::process::ExitCode;
use std::thread;

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: autobahn-echo HOST:PORT");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("autobahn-echo: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let max_message_bytes = claude_ws::Config::default().max_message_bytes;
    match listener.local_addr() {
        Ok(bound) => println!("autobahn-echo listening on ws://{bound}/ws"),
        Err(e) => {
            eprintln!("autobahn-echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    for tcp in listener.incoming() {
        match tcp {
            Ok(tcp) => {
                let spawned = thread::Builder::new()
                    .name("echo".into())
                    .spawn(move || claude_ws::serve_echo(tcp, max_message_bytes));
                if let Err(e) = spawned {
                    eprintln!("autobahn-echo: cannot start a connection thread: {e}");
                }
            }
            Err(e) => eprintln!("autobahn-echo: accept failed: {e}"),
        }
    }
    ExitCode::SUCCESS
}
