//! The agent's Alertmanager push over TLS with basic auth, against the real Alertmanager
//! (`--web.config.file`: a server certificate from a CA of the test's, bcrypt-hashed users).
//! The push arrives with the rule's labels; the same Alertmanager refuses a client without the
//! password (401) and a client that does not trust the CA cannot connect, so the test proves the
//! push really used TLS and auth. The agent trusts the CA through `SSL_CERT_FILE`, as it trusts
//! the bundle the image ships; with no root at all, an https URL stops its start.

mod support;

use std::{path::Path, time::Duration};

use observer::export::alertmanager::{AmAuth, AmClient, AmTarget};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use support::*;
use testbed::{
    monitoring::alertmanager_with,
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, tcp_get},
};

/// A CA and a server certificate for 127.0.0.1, written as PEM files: (ca, cert, key).
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Runs `path` on Alertmanager with `target`'s TLS and auth, from inside `ns`.
fn get(ns: &Netns, target: AmTarget, path: &'static str) -> Result<(u16, String), String> {
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            AmClient::new(target)
                .map_err(|e| e.to_string())?
                .send(hyper::Method::GET, path, None)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

#[test]
fn the_push_reaches_alertmanager_over_tls_with_basic_auth() {
    ports_from(19_950);
    let n = Node::new(Layout::VpcCni);
    let d = dir("am-tls");
    std::fs::create_dir_all(&d).unwrap();
    let (ca, cert, key) = certificates(&d);
    let password = d.join("password");
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let hash = bcrypt::hash("s3cret-pass", 4).unwrap();
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  observer: '{hash}'\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let am_port = next_port();
    let _am = alertmanager_with(
        &n.node,
        &d,
        am_port,
        &[format!("--web.config.file={}", web.display())],
    );
    let url = format!("https://127.0.0.1:{am_port}");
    let target = AmTarget {
        url: url.parse().unwrap(),
        ca_file: Some(ca.clone()),
        auth: AmAuth::Basic {
            user: "observer".into(),
            password_file: password.clone(),
        },
    };
    wait_for(
        "Alertmanager ready over TLS",
        Duration::from_secs(30),
        || matches!(get(&n.node, target.clone(), "/-/ready"), Ok((200, _))),
    );
    // Auth and TLS are enforced: no password, 401; the system's roots, no connection.
    let anonymous = AmTarget {
        auth: AmAuth::None,
        ..target.clone()
    };
    assert_eq!(
        get(&n.node, anonymous, "/api/v2/alerts").map(|r| r.0),
        Ok(401)
    );
    let untrusting = AmTarget {
        ca_file: None,
        ..target.clone()
    };
    let refused = get(&n.node, untrusting, "/api/v2/alerts");
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("certificate")),
        "{refused:?}"
    );

    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let mut a = args(&n);
    a.extend([
        "--alertmanager-url".into(),
        url.clone(),
        "--alertmanager-user".into(),
        "observer".into(),
        "--alertmanager-password-file".into(),
        password.display().to_string(),
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // An https URL with no root to trust stops the start with the reason (the image's case
    // before it shipped a bundle): SSL_CERT_FILE naming nothing, no system bundle read then.
    let check = |env: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["run", "--check-config", "--kubernetes", "off"])
            .args(&a)
            .envs(env.iter().copied())
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    let none = check(&[("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt")]);
    let said = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{said}");
    assert!(
        said.contains("no root certificate") && said.contains("SSL_CERT_FILE"),
        "{said}"
    );
    // The roots of SSL_CERT_FILE (as the image sets it) are the ones trusted: the test's CA,
    // without --alertmanager-ca-file, and the push below goes through over TLS with them.
    let ca_path = ca.display().to_string();
    let ok = check(&[("SSL_CERT_FILE", &ca_path)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let agent = testbed::agent::AgentProc::start_env(
        BIN.as_ref(),
        &n.node,
        &dir("am-tls-agent"),
        next_port(),
        &a,
        &[("SSL_CERT_FILE", &ca_path)],
    );
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    let mut alerts = Vec::new();
    wait_for("the pushed alert", Duration::from_secs(20), || {
        let Ok((200, body)) = get(&n.node, target.clone(), "/api/v2/alerts") else {
            return false;
        };
        alerts = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap();
        !alerts.is_empty()
    });
    let l = &alerts[0]["labels"];
    assert_eq!(l["alertname"], "ObserverDirectPodAccess", "{l}");
    assert_eq!(l["pod_name"], n.pods[0].veth, "{l}");
    assert_eq!(l["source"], "observer-agent", "{l}");
    let m = metrics(&n, &agent);
    assert!(
        sample(&m, "observer_alertmanager_pushes_total", "result=\"ok\"").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "observer_alertmanager_pushes_total", "result=\"error\""),
        None,
        "{m}"
    );
    drop(servers);
}
