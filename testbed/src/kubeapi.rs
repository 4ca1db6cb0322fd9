//! A fixture Kubernetes API server: real list and watch wire format (a list with
//! `metadata.resourceVersion`, then a chunked watch stream of ADDED / MODIFIED / DELETED and
//! BOOKMARK events, `410 Gone` as an ERROR event for an expired resourceVersion), so the
//! production kube-rs code talks to it unchanged through a kubeconfig. Tests change objects,
//! take the API down and up, and expire resource versions.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    ops::Bound,
    path::Path,
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

use crate::netns::Netns;

/// A resource collection: its URL path and list kind.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub path: &'static str,
    pub list_kind: &'static str,
    pub api_version: &'static str,
}

pub const NODES: Kind = Kind {
    path: "/api/v1/nodes",
    list_kind: "NodeList",
    api_version: "v1",
};
pub const PODS: Kind = Kind {
    path: "/api/v1/pods",
    list_kind: "PodList",
    api_version: "v1",
};
pub const SERVICES: Kind = Kind {
    path: "/api/v1/services",
    list_kind: "ServiceList",
    api_version: "v1",
};
pub const ENDPOINT_SLICES: Kind = Kind {
    path: "/apis/discovery.k8s.io/v1/endpointslices",
    list_kind: "EndpointSliceList",
    api_version: "discovery.k8s.io/v1",
};
pub const SERVICE_CIDRS: Kind = Kind {
    path: "/apis/networking.k8s.io/v1/servicecidrs",
    list_kind: "ServiceCIDRList",
    api_version: "networking.k8s.io/v1",
};
pub const NAMESPACES: Kind = Kind {
    path: "/api/v1/namespaces",
    list_kind: "NamespaceList",
    api_version: "v1",
};
pub const TARGET_GROUP_BINDINGS: Kind = Kind {
    path: "/apis/elbv2.k8s.aws/v1beta1/targetgroupbindings",
    list_kind: "TargetGroupBindingList",
    api_version: "elbv2.k8s.aws/v1beta1",
};

/// An object with its wire form, serialized once when it changes: a list page is a
/// concatenation, so serving a 150k-pod list costs the fixture little next to the client.
struct Stored {
    value: serde_json::Value,
    json: String,
}

impl Stored {
    fn new(value: serde_json::Value) -> Stored {
        Stored {
            json: value.to_string(),
            value,
        }
    }
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Oldest resourceVersion a watch may resume from.
    compacted: u64,
    down: bool,
    /// Objects by collection path, then by namespace/name.
    objects: BTreeMap<&'static str, BTreeMap<String, Stored>>,
    /// Every change: (rv, path, type, object).
    history: Vec<(u64, &'static str, &'static str, serde_json::Value)>,
    /// List requests wait while this is set (an API server slow to answer the first lists).
    hold_lists: bool,
    /// Paths whose CRD is "not installed" (404).
    missing: Vec<&'static str>,
    /// Watch streams opened (to see restarts).
    pub watches: u64,
    /// Requests answered 410.
    pub gone: u64,
    /// List pages served, and their bytes.
    pub pages: u64,
    pub page_bytes: u64,
    /// The requests' targets (path and query), in order.
    pub requests: Vec<String>,
}

/// The running fixture server; shuts down with the namespace.
#[derive(Clone)]
pub struct KubeApi {
    state: Arc<(Mutex<Store>, Condvar)>,
    /// The address it listens on (127.0.0.1 unless started with [`KubeApi::start_at`]).
    pub host: &'static str,
    pub port: u16,
}

fn key_of(o: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// A uid as the API server writes them (a UUID), the same for the same object.
fn uid_of(kind: Kind, key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, kind.path, key).hash(&mut h);
        h.finish()
    };
    let (a, b) = (half(1), half(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// What the API server writes into an object it stores: its resourceVersion, apiVersion, and
/// a uid if it has none.
fn stamp(kind: Kind, o: &mut serde_json::Value, rv: &str) {
    o["metadata"]["resourceVersion"] = serde_json::Value::String(rv.to_string());
    o["apiVersion"] = serde_json::Value::String(kind.api_version.into());
    if o["metadata"]["uid"].is_null() {
        o["metadata"]["uid"] = serde_json::Value::String(uid_of(kind, &key_of(o)));
    }
}

impl KubeApi {
    /// Starts the server on 127.0.0.1:`port` inside `ns`.
    pub fn start(ns: &Netns, port: u16) -> KubeApi {
        Self::start_at(ns, "127.0.0.1", port)
    }

    /// Starts the server on `host`:`port` inside `ns` (an address of `ns`, for clients in
    /// other namespaces: the agents of several nodes).
    pub fn start_at(ns: &Netns, host: &'static str, port: u16) -> KubeApi {
        let api = KubeApi {
            state: Arc::new((Mutex::new(Store::default()), Condvar::new())),
            host,
            port,
        };
        let a = api.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        ns.spawn(move || {
            // While "down" the port is closed: clients get connection refused, as from an
            // API server that is gone.
            let bind = || {
                let l = TcpListener::bind((host, port)).expect("bind the fixture API");
                l.set_nonblocking(true).expect("nonblocking");
                l
            };
            let mut listener = Some(bind());
            tx.send(()).expect("ready");
            loop {
                let down = a.state.0.lock().unwrap().down;
                match (&listener, down) {
                    (Some(_), true) => listener = None,
                    (None, false) => listener = Some(bind()),
                    _ => {}
                }
                let Some(l) = listener.as_ref() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                // Wait for a connection, at most 20 ms (to see `down` change): a client is
                // accepted as it connects, as by a real server, not at the next 20 ms tick.
                if !readable(l, 20) {
                    continue;
                }
                if let Ok((s, _)) = l.accept() {
                    let _ = s.set_nonblocking(false);
                    // Responses go out as written, without waiting for the client's delayed ACK.
                    let _ = s.set_nodelay(true);
                    let a = a.clone();
                    thread::spawn(move || a.serve(s));
                }
            }
        });
        rx.recv().expect("fixture API started");
        api
    }

    /// Writes a kubeconfig pointing at this server.
    pub fn kubeconfig(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: http://{}:{}\nusers:\n- name: fixture\n  user:\n    token: fixture\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: fixture\ncurrent-context: fixture\n",
                self.host, self.port
            ),
        )
        .expect("kubeconfig");
    }

    fn change(&self, kind: Kind, ty: &'static str, mut obj: serde_json::Value) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        stamp(kind, &mut obj, &rv.to_string());
        let coll = s.objects.entry(kind.path).or_default();
        if ty == "DELETED" {
            coll.remove(&key_of(&obj));
        } else {
            coll.insert(key_of(&obj), Stored::new(obj.clone()));
        }
        s.history.push((rv, kind.path, ty, obj));
        cv.notify_all();
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    pub fn apply(&self, kind: Kind, obj: serde_json::Value) {
        let exists = {
            let s = self.state.0.lock().unwrap();
            s.objects
                .get(kind.path)
                .is_some_and(|c| c.contains_key(&key_of(&obj)))
        };
        self.change(kind, if exists { "MODIFIED" } else { "ADDED" }, obj);
    }

    /// Loads many objects at once, before any client watches (fixtures of large clusters).
    pub fn load(&self, kind: Kind, objects: Vec<serde_json::Value>) {
        let (m, _) = &*self.state;
        let mut s = m.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let coll = s.objects.entry(kind.path).or_default();
        for mut o in objects {
            stamp(kind, &mut o, &rv);
            coll.insert(key_of(&o), Stored::new(o));
        }
    }

    /// Deletes an object.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let obj = {
            let s = self.state.0.lock().unwrap();
            s.objects
                .get(kind.path)
                .and_then(|c| c.get(&format!("{namespace}/{name}")))
                .map(|o| o.value.clone())
        };
        if let Some(o) = obj {
            self.change(kind, "DELETED", o);
        }
    }

    /// The API stops answering (503) and drops its watches, or comes back.
    pub fn set_down(&self, down: bool) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().down = down;
        cv.notify_all();
    }

    /// Forgets the history: watches resuming from an older resourceVersion get 410 Gone.
    /// Open watches are closed.
    pub fn expire(&self) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.compacted = s.rv + 1;
        s.rv += 1;
        s.history.clear();
        cv.notify_all();
    }

    /// List requests wait (`true`) until released (`false`): a slow first sync.
    pub fn hold_lists(&self, hold: bool) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().hold_lists = hold;
        cv.notify_all();
    }

    /// A collection answers 404 (its CRD is not installed).
    pub fn set_missing(&self, kind: Kind) {
        self.state.0.lock().unwrap().missing.push(kind.path);
    }

    /// (list pages served, their bytes) so far: the load a client puts on the API server.
    pub fn list_load(&self) -> (u64, u64) {
        let s = self.state.0.lock().unwrap();
        (s.pages, s.page_bytes)
    }

    /// The requests' targets so far (path and query, as sent).
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
    }

    /// (watch streams opened, 410 answers) so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state.0.lock().unwrap();
        (s.watches, s.gone)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let mut out = stream;
        let (m, cv) = &*self.state;
        m.lock().unwrap().requests.push(target.clone());
        if path == "/version" {
            let _ = respond(
                &mut out,
                200,
                r#"{"major":"1","minor":"33","gitVersion":"v1.33.0","platform":"linux/amd64"}"#,
            );
            return;
        }
        // `/api/v1/namespaces/<ns>/pods[/<name>]` is the namespaced form of `/api/v1/pods`.
        let (path, namespace, name) = namespaced(path);
        let path = path.as_str();
        let kind = [
            NODES,
            PODS,
            SERVICES,
            ENDPOINT_SLICES,
            SERVICE_CIDRS,
            TARGET_GROUP_BINDINGS,
            NAMESPACES,
        ]
        .into_iter()
        .find(|k| k.path == path);
        {
            let s = m.lock().unwrap();
            if s.down {
                let _ = respond(
                    &mut out,
                    503,
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}"#,
                );
                return;
            }
            if kind.is_none() || s.missing.contains(&path) {
                let _ = respond(
                    &mut out,
                    404,
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                );
                return;
            }
        }
        let kind = kind.expect("checked");
        // A namespace, an equality label selector and an equality field selector narrow lists
        // and watches, as on a real server.
        let filter = Filter {
            namespace: namespace.clone(),
            labels: params.get("labelSelector").map(|v| unescape(v)),
            fields: params.get("fieldSelector").map(|v| unescape(v)),
        };
        if let (Some(ns), Some(name)) = (&namespace, &name) {
            let s = m.lock().unwrap();
            let obj = s
                .objects
                .get(kind.path)
                .and_then(|c| c.get(&format!("{ns}/{name}")))
                .map(|o| o.json.clone());
            drop(s);
            let _ = match obj {
                Some(o) => respond(&mut out, 200, &o),
                None => respond(
                    &mut out,
                    404,
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                ),
            };
            return;
        }
        if params.get("watch") != Some(&"true") && params.get("watch") != Some(&"1") {
            // Paginated like the real API server: `limit` and an opaque `continue` token.
            let mut s = m.lock().unwrap();
            while s.hold_lists {
                s = cv.wait(s).unwrap();
            }
            // A namespace and an equality label selector narrow the list, as on a real server.
            // The continue token is the last key served (hex), so a page starts with a tree
            // lookup, as the real server's does, and the items are their stored wire form.
            let wanted = |o: &serde_json::Value| filter.wanted(o);
            let after = params.get("continue").and_then(|c| unhex(c));
            let limit: usize = params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let mut items = String::new();
            let mut last: Option<&str> = None;
            let mut more = false;
            if let Some(c) = s.objects.get(kind.path) {
                let from = match &after {
                    Some(k) => Bound::Excluded(k.as_str()),
                    None => Bound::Unbounded,
                };
                for (n, (k, o)) in c
                    .range::<str, _>((from, Bound::Unbounded))
                    .filter(|(_, o)| wanted(&o.value))
                    .enumerate()
                {
                    if n == limit {
                        more = true;
                        break;
                    }
                    if n > 0 {
                        items.push(',');
                    }
                    items.push_str(&o.json);
                    last = Some(k);
                }
            }
            let mut meta = serde_json::json!({"resourceVersion": s.rv.to_string()});
            if let (true, Some(k)) = (more, last) {
                meta["continue"] = serde_json::Value::String(hex(k));
            }
            let body = format!(
                r#"{{"kind":"{}","apiVersion":"{}","metadata":{meta},"items":[{items}]}}"#,
                kind.list_kind, kind.api_version
            );
            s.pages += 1;
            s.page_bytes += body.len() as u64;
            drop(s);
            let _ = respond(&mut out, 200, &body);
            return;
        }
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut s = m.lock().unwrap();
        s.watches += 1;
        if from < s.compacted {
            s.gone += 1;
            drop(s);
            let ev = serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
            let _ = chunk(&mut out, &ev.to_string());
            let _ = out.write_all(b"0\r\n\r\n");
            return;
        }
        let compacted = s.compacted;
        let mut sent = from;
        loop {
            if s.down || s.compacted != compacted {
                return; // the connection drops, as a restarted API server's would
            }
            let evs: Vec<(u64, &str, serde_json::Value)> = s
                .history
                .iter()
                .filter(|(rv, p, _, o)| *rv > sent && *p == kind.path && filter.wanted(o))
                .map(|(rv, _, ty, o)| (*rv, *ty, o.clone()))
                .collect();
            let rv_now = s.rv;
            drop(s);
            for (rv, ty, o) in evs {
                if chunk(
                    &mut out,
                    &serde_json::json!({"type": ty, "object": o}).to_string(),
                )
                .is_err()
                {
                    return;
                }
                sent = rv;
            }
            // A bookmark so the client's resourceVersion keeps up.
            let kind_name = kind.list_kind.trim_end_matches("List");
            let bm = serde_json::json!({"type": "BOOKMARK", "object": {"kind": kind_name, "apiVersion": kind.api_version, "metadata": {"resourceVersion": rv_now.to_string()}}});
            if chunk(&mut out, &bm.to_string()).is_err() {
                return;
            }
            sent = sent.max(rv_now);
            s = m.lock().unwrap();
            let (g, _) = cv.wait_timeout(s, Duration::from_millis(500)).unwrap();
            s = g;
        }
    }
}

/// Splits a namespaced resource path into the cluster-wide one, the namespace and the name.
fn namespaced(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v, "namespaces", ns, res] => {
            (format!("/api/{v}/{res}"), Some(ns.to_string()), None)
        }
        ["api", v, "namespaces", ns, res, name] => (
            format!("/api/{v}/{res}"),
            Some(ns.to_string()),
            Some(name.to_string()),
        ),
        _ => (path.to_string(), None, None),
    }
}

/// A continue token: the last key served, in hex (opaque to the client, safe in a URL).
fn hex(k: &str) -> String {
    k.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(t: &str) -> Option<String> {
    let b = t.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = b
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Percent-decoding of a query value (`%3D` and friends, `+`).
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                    out.push(x);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request narrows its list or watch to.
struct Filter {
    namespace: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
}

impl Filter {
    fn wanted(&self, o: &serde_json::Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"] == ns)
            && self
                .labels
                .as_deref()
                .is_none_or(|sel| matches_selector(o, sel))
            && self
                .fields
                .as_deref()
                .is_none_or(|sel| matches_fields(o, sel))
    }
}

/// Whether an object's fields match an equality field selector (`spec.nodeName=x,...`).
fn matches_fields(o: &serde_json::Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (path, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        let at = path.trim().split('.').fold(o, |node, key| &node[key]);
        at.as_str().unwrap_or("") == v.trim()
    })
}

/// Whether an object's labels match an equality selector (`k=v,k2=v2`).
fn matches_selector(o: &serde_json::Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        let v = v.trim_start_matches('=');
        o["metadata"]["labels"][k.trim()] == v.trim()
    })
}

/// Whether the listener has a connection waiting, within `ms` milliseconds.
fn readable(l: &TcpListener, ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn respond(out: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    // The head in one write and the body in another, not a write per formatted piece.
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())
}

fn chunk(out: &mut TcpStream, line: &str) -> std::io::Result<()> {
    // One write per chunk: a watch event goes out whole.
    let c = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    out.write_all(c.as_bytes())
}

pub mod fixtures;
