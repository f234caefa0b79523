//! A bare client of covobs' control socket, for tests that run it as another user:
//! `control-client SOCKET LINE` connects, sends LINE and a newline, and prints the answer.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(line)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: control-client SOCKET LINE");
        std::process::exit(2);
    };
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect {path}: {e}");
            std::process::exit(1);
        }
    };
    let _ = s.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    print!("{answer}");
}
