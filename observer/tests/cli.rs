//! Bad flags, bad config files and a missing agent give clear errors and the documented exit
//! codes: 2 for unusable settings and usage, 3 when no agent answers.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_observer");

fn observer(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("OBSERVER_SOCKET")
        .output()
        .expect("running observer")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_flags_exit_2_naming_key_and_value() {
    for (args, want) in [
        (
            vec!["run", "--nodeport-range", "5-3"],
            "nodeport-range \"5-3\"",
        ),
        (
            vec!["run", "--cluster-cidr", "10.0.0.0/99"],
            "cluster-cidr \"10.0.0.0/99\"",
        ),
        (
            vec!["run", "--allow-source", "lb-subnet"],
            "allow-source \"lb-subnet\"",
        ),
        (
            vec!["run", "--metrics-addr", "everywhere"],
            "metrics-addr \"everywhere\"",
        ),
        (vec!["run", "--uplink", "eth0;rm"], "uplink \"eth0;rm\""),
        (vec!["run", "--log-format", "xml"], "log-format \"xml\""),
        (
            vec!["run", "--flow-idle-timeout", "0s"],
            "flow-idle-timeout \"0s\"",
        ),
        (vec!["run", "--frobnicate"], "--frobnicate"),
    ] {
        let o = observer(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn env_variables_set_flags() {
    let o = Command::new(BIN)
        .args(["run"])
        .env("OBSERVER_NODEPORT_RANGE", "9-1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nodeport-range \"9-1\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_config_files_exit_2() {
    let dir = std::env::temp_dir().join(format!("observer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let cases = [
        (
            dir.join("missing.yaml").to_string_lossy().into_owned(),
            "cannot read config file",
        ),
        (
            write("typo.yaml", "clustre-cidr: [10.0.0.0/8]\n"),
            "clustre-cidr",
        ),
        (
            write("value.toml", "nodeport-range = \"1-0\"\n"),
            "nodeport-range \"1-0\"",
        ),
        (write("broken.yaml", "allow-source: [\n"), "config file"),
        (write("config.json", "{}"), "unknown extension"),
        (
            write("cidr.yaml", "service-cidr: [not-a-cidr]\n"),
            "service-cidr \"not-a-cidr\"",
        ),
    ];
    for (path, want) in cases {
        let o = observer(&["run", "--config", &path]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{path}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn clients_without_an_agent_say_so_and_exit_3() {
    let socket = std::env::temp_dir().join(format!("observer-none-{}.sock", std::process::id()));
    let s = socket.to_string_lossy();
    for args in [
        vec!["--socket", &s, "flows"],
        vec!["--socket", &s, "status"],
        vec!["--socket", &s, "explain", "10.0.6.245", "10.0.3.240:80"],
    ] {
        let o = observer(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert!(
            stderr(&o).contains("no observer agent is serving"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn usage_errors_exit_2_and_completions_are_printed() {
    for args in [
        vec!["flows", "--state", "sleeping"],
        vec!["flows", "--verdict", "evil"],
        vec!["flows", "--from", "10.0.0.0/99"],
        vec!["flows", "--since", "yesterday"],
        vec!["flows", "-o", "yaml"],
        vec!["flows", "--follow", "--fail-if-any"],
    ] {
        let o = observer(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // The verdicts are listed in --help.
    let help = String::from_utf8_lossy(&observer(&["flows", "--help"]).stdout).to_string();
    assert!(
        help.contains("direct_to_pod") && help.contains("nodeport"),
        "{help}"
    );
    let o = observer(&["completion", "bash"]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        script.contains("_observer") && script.contains("--fail-if-any"),
        "{script}"
    );
}
