//! `kubectl observer` (the binary installed as `kubectl-observer`): it finds the agent pod of a
//! node through the API (the fixture server, the production kube-rs code), `--node` or the node
//! of `--pod`, and runs the command there with `kubectl exec`; `-A` merges `flows` from every
//! node's agent with the node. kubectl itself is played by a script that "execs" into an agent
//! pod by running the observer client against that node's real agent.

mod support;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use serde_json::json;
use support::*;
use testbed::{
    kubeapi::{KubeApi, PODS, fixtures::pod},
    topology::{Layout, Node},
    traffic::{Servers, tcp_get},
};

const NODE_A: &str = "ip-10-0-7-223.ec2.internal";
const NODE_B: &str = "ip-10-0-13-0.ec2.internal";

/// An observer DaemonSet pod on `node`.
fn agent_pod(name: &str, node: &str) -> serde_json::Value {
    let mut p = pod("observer", name, "observer", node, "10.0.0.1", &[]);
    p["metadata"]["labels"] = json!({"app.kubernetes.io/name": "observer"});
    p
}

/// A `kubectl` that understands `exec -n observer POD -- observer ARGS...` and runs the observer
/// client against the socket of POD's agent.
fn fake_kubectl(dir: &Path, sockets: &[(&str, &Path)]) -> std::path::PathBuf {
    let mut script = String::from(
        "#!/bin/sh\n# exec -n observer POD -- observer ARGS...\n[ \"$1\" = exec ] || exit 64\npod=\"$4\"\nshift 6\ncase \"$pod\" in\n",
    );
    for (pod, socket) in sockets {
        script.push_str(&format!(
            "  {pod}) exec \"{}\" --socket \"{}\" \"$@\" ;;\n",
            BIN,
            socket.display()
        ));
    }
    script.push_str("  *) echo \"no pod $pod\" >&2; exit 1 ;;\nesac\n");
    let path = dir.join("kubectl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs the plugin with `args` in `netns` and reads its output until `done` says so (60 s at
/// most), then interrupts its process group (the plugin and its kubectl children) as Ctrl-C
/// does. Returns the lines read.
fn follow(
    netns: &str,
    plugin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    use std::{io::BufRead as _, os::unix::process::CommandExt as _};
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(plugin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            if tx.send(l.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    let ended = child.try_wait().unwrap();
    let _ = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    assert!(
        done(&seen),
        "the follow did not show every node in 60 s (ended: {ended:?}): {seen:?}"
    );
    seen
}

#[test]
fn the_plugin_finds_the_nodes_agent_and_merges_all_nodes() {
    ports_from(19_960);
    let a = Node::new(Layout::VpcCni);
    let b = Node::new(Layout::Calico);
    let d = dir("plugin");
    std::fs::create_dir_all(&d).unwrap();
    let mut servers = Servers::new();
    servers.tcp(&a.pods[0].ns, 80);
    servers.tcp(&b.pods[0].ns, 80);
    let agent_a = start(&a, "plugin-a", &[]);
    let agent_b = start(&b, "plugin-b", &[]);
    // One direct access on each node.
    for n in [&a, &b] {
        assert_eq!(
            tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
            Ok("hello\n")
        );
    }
    for agent in [&agent_a, &agent_b] {
        wait_for("the flow settled", Duration::from_secs(10), || {
            flows(agent).iter().any(|r| r.state == "answered")
        });
    }
    // The API: the two agents (and one of another DaemonSet), and a workload pod on node B.
    let api = KubeApi::start(&a.node, 19_961);
    api.apply(PODS, agent_pod("observer-aaaaa", NODE_A));
    api.apply(PODS, agent_pod("observer-bbbbb", NODE_B));
    let mut other = pod(
        "kube-system",
        "aws-node-ccccc",
        "aws-node",
        NODE_A,
        "10.0.0.2",
        &[],
    );
    other["metadata"]["labels"] = json!({"app.kubernetes.io/name": "aws-node"});
    api.apply(PODS, other);
    api.apply(
        PODS,
        pod(
            "shop",
            "web-7854ff8877-z5nh5",
            "web",
            NODE_B,
            b.pods[0].ip,
            &[80],
        ),
    );
    let kubeconfig = d.join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    let kubectl = fake_kubectl(
        &d,
        &[
            ("observer-aaaaa", agent_a.socket.as_path()),
            ("observer-bbbbb", agent_b.socket.as_path()),
        ],
    );
    // Run as kubectl runs plugins: the binary named kubectl-observer, on the PATH.
    let plugin = d.join("kubectl-observer");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &a.node.name])
            .arg(&plugin)
            .args(["--kubectl", kubectl.to_str().unwrap()])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let srcs = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["dst"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    // --node: that node's agent only.
    let (code, out, err) = run(&["--node", NODE_A, "flows", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(srcs(&out), [a.pods[0].ip], "{out}");
    // --pod: the agent of the pod's node.
    let (code, out, err) = run(&["--pod", "shop/web-7854ff8877-z5nh5", "flows", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(srcs(&out), [b.pods[0].ip], "{out}");
    // The command's own exit status comes through.
    let (code, _, _) = run(&["--node", NODE_B, "flows", "--fail-if-any"]);
    assert_eq!(code, Some(4));
    // -A: both nodes, merged, with a NODE column or a node field.
    let (code, out, err) = run(&["-A", "flows"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("VERDICT"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    // Rows by node name, then as each agent lists them.
    assert!(
        lines[1].starts_with(NODE_B) && lines[2].starts_with(NODE_A),
        "{out}"
    );
    let (_, out, _) = run(&["-A", "flows", "-o", "json", "--state", "answered"]);
    let nodes: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["node"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(nodes, [NODE_B, NODE_A]);
    // -A --fail-if-any: every node's rows, and the documented status (before: the rows of
    // exactly the nodes that matched were dropped as failures, and it exited 1).
    let (code, out, err) = run(&["-A", "flows", "--fail-if-any"]);
    assert_eq!(code, Some(4), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}{err}");
    assert!(
        lines[1].starts_with(NODE_B) && lines[2].starts_with(NODE_A),
        "{out}"
    );
    assert!(!err.contains("observer:"), "{err}");
    let (code, out, _) = run(&["-A", "flows", "--fail-if-any", "--state", "refused"]);
    assert_eq!((code, out.as_str()), (Some(0), ""));
    // -A --follow: every node followed at once (before: it waited on the first node's follow,
    // which never ends). Read until both nodes' rows came, then interrupted as a user does.
    for (format, header) in [(None, true), (Some("json"), false)] {
        let mut args = vec![
            "--kubectl",
            kubectl.to_str().unwrap(),
            "-A",
            "flows",
            "--follow",
        ];
        if let Some(f) = format {
            args.extend(["-o", f]);
        }
        let lines = follow(&a.node.name, &plugin, &kubeconfig, &args, |seen| {
            [NODE_A, NODE_B].iter().all(|n| {
                seen.iter()
                    .any(|l| l.starts_with(n) || l.contains(&format!("\"node\":\"{n}\"")))
            })
        });
        assert_eq!(
            lines[0].starts_with("NODE") && lines[0].contains("VERDICT"),
            header,
            "{lines:?}"
        );
    }
    // A node without an agent, and no node at all: clear errors.
    let (code, _, err) = run(&["--node", "ip-10-0-99-9.ec2.internal", "status"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no running observer pod on node ip-10-0-99-9"),
        "{err}"
    );
    let (code, _, err) = run(&["status"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--node NODE, --pod NAMESPACE/NAME, or -A"),
        "{err}"
    );
    drop(servers);
}
