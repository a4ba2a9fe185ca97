//! A closed stdout ends a command quietly, as other Unix tools do.

use crate::support::{Hypod, SAMPLE};
use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn analyze_json_into_a_closed_pipe_exits_0() {
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypod"))
        .args(["analyze", "--json"])
        .current_dir(hypod.path())
        .env("HYPOD_CONFIG", hypod.path().join("hypod.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hypod");
    let mut first = [0u8; 100];
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut first).expect("100 bytes");
    drop(stdout);
    let output = child.wait_with_output().expect("hypod ends");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
