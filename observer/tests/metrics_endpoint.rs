//! The metrics endpoint over TLS with a bearer token, as the chart serves it to a
//! ServiceMonitor (`scheme: https`, `tlsConfig.serverName`, `authorization`): scraped by curl
//! from the node's namespace, verifying the certificate by the Service's name. `/metrics`
//! answers only the token; the probes stay open; plain HTTP gets nothing; a rotated token and
//! a rotated certificate (as a Secret's update swaps the files) are used from the next scrape;
//! a rotation that does not load keeps the previous certificate until a good one comes.

mod support;

use std::{path::Path, process::Command};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use support::*;
use testbed::{
    netns::Netns,
    topology::{Layout, Node},
};

const NAME: &str = "observer.observer.svc";

/// A CA, and a certificate for the Service's name it signed: (ca PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL (curl) takes a certificate whose issuer is its subject for
    // self-signed.
    ca.distinguished_name
        .push(DnType::CommonName, "observer test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![NAME.to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, NAME);
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Replaces `path`'s content at once (a new file renamed over it, as a Secret's update swaps
/// its files).
fn swap(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// curl from `ns` to the endpoint on `port`: the HTTP status (0: no HTTP answer) and the body.
fn curl(
    ns: &Netns,
    scheme: &str,
    port: u16,
    path: &str,
    ca: &Path,
    token: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "curl", "-sS", "--max-time", "5"])
        .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(ca)
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("{scheme}://{NAME}:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim().parse() {
        Ok(c) if c > 0 => (c, body.to_string()),
        // No HTTP answer: what curl said instead.
        _ => (
            0,
            format!(
                "curl {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
    }
}

#[test]
fn metrics_over_tls_answer_only_the_token_and_follow_rotations() {
    let n = Node::new(Layout::Calico);
    let d = dir("metrics-tls");
    std::fs::create_dir_all(&d).unwrap();
    let (ca, cert, key) = certificates();
    let (ca_file, cert_file, key_file, token_file) = (
        d.join("ca.pem"),
        d.join("tls.crt"),
        d.join("tls.key"),
        d.join("token"),
    );
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&token_file, "first-token\n").unwrap();
    let paths = [&cert_file, &key_file, &token_file].map(|p| p.display().to_string());

    // Refused at start: a certificate without its key, an empty token file.
    let check = |extra: &[&str]| {
        Command::new(BIN)
            .args(["run", "--check-config", "--kubernetes", "off"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = check(&["--metrics-tls-cert-file", &paths[0]]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("with --metrics-tls-key-file"));
    let empty = d.join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let o = check(&["--metrics-bearer-token-file", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty"));

    let agent = start(
        &n,
        "metrics-tls-agent",
        &[
            "--metrics-tls-cert-file",
            &paths[0],
            "--metrics-tls-key-file",
            &paths[1],
            "--metrics-bearer-token-file",
            &paths[2],
        ],
    );
    let port = agent.metrics_port;
    let get = |scheme: &str, path: &str, token: Option<&str>| {
        curl(&n.node, scheme, port, path, &ca_file, token)
    };
    // The same over https, verifying with another CA.
    let with =
        |ca: &Path, path: &str, token: Option<&str>| curl(&n.node, "https", port, path, ca, token);

    // The token: metrics; none or another: 401.
    let (code, body) = get("https", "/metrics", Some("first-token"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("observer_attached_interfaces"), "{body}");
    assert_eq!(get("https", "/metrics", None).0, 401);
    assert_eq!(get("https", "/metrics", Some("first-toke")).0, 401);
    // The probes need no token.
    assert_eq!(get("https", "/healthz", None).0, 200);
    assert_eq!(get("https", "/readyz", None).0, 200);
    // Plain HTTP gets no HTTP answer.
    assert_eq!(get("http", "/metrics", Some("first-token")).0, 0);

    // The token rotated: the next scrape needs the new one.
    swap(&token_file, "second-token\n");
    assert_eq!(get("https", "/metrics", Some("first-token")).0, 401);
    assert_eq!(get("https", "/metrics", Some("second-token")).0, 200);

    // A new CA's pair written over the served one (the key first, as a Secret's update may
    // land): the new CA's file.
    let rotate = |name: &str| {
        let (ca, cert, key) = certificates();
        let ca_file = d.join(name);
        std::fs::write(&ca_file, &ca).unwrap();
        swap(&key_file, &key);
        swap(&cert_file, &cert);
        ca_file
    };
    // The certificate rotated to another CA's: the next connection presents it (the old CA no
    // longer verifies it, the new one does).
    let ca2_file = rotate("ca2.pem");
    assert_eq!(
        get("https", "/healthz", None).0,
        0,
        "the old CA still verifies"
    );
    assert_eq!(with(&ca2_file, "/metrics", Some("second-token")).0, 200);
    assert_eq!(
        log_count(&agent, "the metrics certificate changed: loaded"),
        1,
        "{}",
        agent.log_text()
    );

    // A rotation that does not load (a certificate file that holds none) keeps the previous
    // certificate, said once; the good pair written after it is loaded at the next connection.
    swap(&cert_file, "not a certificate\n");
    for _ in 0..2 {
        assert_eq!(with(&ca2_file, "/healthz", None).0, 200);
    }
    assert_eq!(
        log_count(&agent, "does not load; serving the previous one"),
        1
    );
    let ca3_file = rotate("ca3.pem");
    assert_eq!(with(&ca3_file, "/metrics", Some("second-token")).0, 200);
    assert_eq!(
        log_count(&agent, "the metrics certificate changed: loaded"),
        2
    );
}
