//! `observer flows` against a live agent as a kubectl user runs it: filters, `-o table|wide|json`,
//! `--follow` with its header, `--fail-if-any` exit codes, and per-call switches that the
//! container's environment cannot set (an `OBSERVER_FOLLOW` in the DaemonSet must not make every
//! `kubectl exec` hang).

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, tcp_get},
};

#[test]
fn flows_filters_formats_and_exit_codes() {
    ports_from(19_900);
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let agent = start(&n, "cliflows", &[]);
    // Pod A answers on :80; pod B refuses :8080.
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    let _ = tcp_get(&n.outside, None, n.pods[1].ip, 8080);
    wait_for("both flows settled", Duration::from_secs(10), || {
        let rows = flows(&agent);
        rows.len() == 2 && rows.iter().all(|r| r.state != "silent")
    });
    let run = |args: &[&str]| {
        let o = agent.cli(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let count = |args: &[&str]| {
        let mut a = vec!["flows", "-o", "json"];
        a.extend_from_slice(args);
        let (code, out) = run(&a);
        assert_eq!(code, Some(0), "{a:?}");
        out.lines().count()
    };
    assert_eq!(count(&[]), 2);
    assert_eq!(count(&["--port", "80"]), 1);
    assert_eq!(count(&["--state", "refused"]), 1);
    assert_eq!(count(&["--pod", n.pods[1].veth]), 1);
    assert_eq!(count(&["--from", "10.0.0.0/16"]), 2);
    assert_eq!(count(&["--from", "192.0.2.0/24"]), 0);
    assert_eq!(count(&["--since", "1h", "--last", "1"]), 1);
    assert_eq!(count(&["--verdict", "nodeport"]), 0);
    // Formats: the table and its wide form, --json as an alias of -o json.
    let (_, table) = run(&["flows"]);
    assert!(table.starts_with("VERDICT"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let (_, wide) = run(&["flows", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().ends_with("REASON"), "{wide}");
    let (_, json) = run(&["flows", "--json", "--port", "80"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(row["state"], "answered");
    // Scripts: 4 when a flow matches, 0 when none does.
    assert_eq!(run(&["flows", "--fail-if-any"]).0, Some(4));
    assert_eq!(
        run(&["flows", "--fail-if-any", "--from", "192.0.2.0/24"]).0,
        Some(0)
    );
    // The container's environment does not switch per-call behaviour: a plain `flows` returns.
    let o = Command::new(BIN)
        .args(["--socket", agent.socket.to_str().unwrap(), "flows"])
        .env("OBSERVER_FOLLOW", "true")
        .env("OBSERVER_JSON", "true")
        .env("OBSERVER_VERDICT", "nodeport")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("VERDICT") && out.lines().count() == 3,
        "{out}"
    );
    // --follow: a header first, then aligned rows as flows come.
    let mut follow = Command::new(BIN)
        .args([
            "--socket",
            agent.socket.to_str().unwrap(),
            "flows",
            "--follow",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("VERDICT"), "{header}");
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    let row = lines.next().unwrap().unwrap();
    assert!(row.starts_with("direct_to_pod"), "{row}");
    assert_eq!(
        header.find("PROTO"),
        row.find("tcp"),
        "aligned:\n{header}\n{row}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    drop(servers);
}
