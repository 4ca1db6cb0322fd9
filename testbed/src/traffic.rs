//! Traffic inside the test namespaces: servers in pods and on the outside host, and clients
//! that connect from a namespace (optionally from a chosen source address).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use crate::netns::Netns;

pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Background servers that stop when this is dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Default for Servers {
    fn default() -> Self {
        Self::new()
    }
}

impl Servers {
    pub fn new() -> Self {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// The usual servers of a simulated node: in each pod TCP 80 ("hello"), UDP 5353 (echo),
    /// TCP 8080 (echo, long connections) and TCP 9000 (stream hash); on the outside host TCP
    /// 8443 ("hello", for the pods' own connections) and UDP 53 (echo, their DNS).
    pub fn for_node(n: &crate::topology::Node) -> Servers {
        let mut s = Servers::new();
        for p in &n.pods {
            s.tcp(&p.ns, 80);
            s.udp(&p.ns, 5353);
            s.tcp_echo(&p.ns, 8080);
            s.tcp_hash(&p.ns, 9000);
        }
        s.tcp(&n.outside, 8443);
        s.udp(&n.outside, 53);
        s
    }

    /// A TCP server that answers "hello\n" to each connection and closes it.
    pub fn tcp(&mut self, ns: &Netns, port: u16) {
        self.tcp_with(ns, port, |mut s| {
            let _ = s.write_all(b"hello\n");
        });
    }

    /// A TCP server that echoes what it reads until the client closes (long connections).
    pub fn tcp_echo(&mut self, ns: &Netns, port: u16) {
        self.tcp_with(ns, port, |mut s| {
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        });
    }

    fn tcp_with(&mut self, ns: &Netns, port: u16, on: impl Fn(TcpStream) + Send + 'static) {
        let stop = self.stop.clone();
        let (tx, rx) = mpsc::channel();
        self.threads.push(ns.spawn(move || {
            // [::] takes IPv4 too (bindv6only is 0 in a new namespace).
            let l = TcpListener::bind(("::", port)).expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            tx.send(()).expect("ready");
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        on(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        rx.recv().expect("server started");
    }

    /// A UDP server that echoes each datagram (up to 64 KiB, so large ones come back
    /// fragmented).
    pub fn udp(&mut self, ns: &Netns, port: u16) {
        let stop = self.stop.clone();
        let (tx, rx) = mpsc::channel();
        self.threads.push(ns.spawn(move || {
            let s = UdpSocket::bind(("::", port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }));
        rx.recv().expect("server started");
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn sockaddr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), port)
}

fn connect(src: Option<&str>, dst: SocketAddr) -> (u16, std::io::Result<TcpStream>) {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("socket");
    if let Some(src) = src {
        s.bind(&sockaddr(src, 0).into()).expect("bind source");
    }
    let r = s.connect_timeout(&dst.into(), TIMEOUT);
    let local = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    (local, r.map(|()| s.into()))
}

/// Connects from `ns` (from `src` if given) and reads the greeting. Returns the local port
/// and the outcome: the text, or the error kind.
pub fn tcp_get(
    ns: &Netns,
    src: Option<&'static str>,
    dst: &str,
    port: u16,
) -> (u16, Result<String, std::io::ErrorKind>) {
    let dst = sockaddr(dst, port);
    ns.run(move || {
        let (local, r) = connect(src, dst);
        let mut stream = match r {
            Ok(s) => s,
            Err(e) => return (local, Err(e.kind())),
        };
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut text = String::new();
        let r = stream
            .read_to_string(&mut text)
            .map(|_| text)
            .map_err(|e| e.kind());
        (local, r)
    })
}

/// A TCP connection opened from `ns`, kept open: the stream and its local port.
pub fn tcp_open(ns: &Netns, dst: &str, port: u16) -> (u16, TcpStream) {
    let dst = sockaddr(dst, port);
    ns.run(move || {
        let (local, r) = connect(None, dst);
        let s = r.expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        (local, s)
    })
}

/// Sends a datagram from `ns` and waits for the echo. Returns the local port and whether the
/// echo came.
pub fn udp_echo(ns: &Netns, dst: &str, port: u16) -> (u16, bool) {
    let dst = sockaddr(dst, port);
    ns.run(move || {
        let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(any).expect("bind");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let local = s.local_addr().expect("local").port();
        s.send_to(b"ping", dst).expect("send");
        let mut buf = [0u8; 16];
        (local, s.recv_from(&mut buf).is_ok())
    })
}

/// One datagram from `ns` to each port of `ports`, without waiting (a port scan).
pub fn udp_scan(ns: &Netns, dst: &str, ports: std::ops::RangeInclusive<u16>) {
    let dst: std::net::IpAddr = dst.parse().expect("address");
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for p in ports {
            let _ = s.send_to(b"x", SocketAddr::new(dst, p));
        }
    });
}

/// GET `path` from `127.0.0.1:port` inside `ns` (the agent's metrics endpoint).
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Result<(u16, String), String> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    ns.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        let (head, body) = out.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("no HTTP status")?;
        Ok((code, body.to_string()))
    })
}

/// A raw AF_PACKET socket on `iface` (of the calling thread's namespace) and the link-layer
/// address that sends to `dst_mac` through it.
fn packet_socket(iface: &str, dst_mac: &[u8]) -> (i32, libc::sockaddr_ll) {
    let name = std::ffi::CString::new(iface).expect("name");
    // SAFETY: plain libc calls; the socket is returned to the caller, who closes it.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index != 0, "no interface {iface}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac[..6]);
        (fd, addr)
    }
}

/// Sends one frame; true if the kernel took it.
fn send_frame(fd: i32, addr: &libc::sockaddr_ll, f: &[u8]) -> bool {
    // SAFETY: `f` and `addr` outlive the call; sendto only reads them.
    let rc = unsafe {
        libc::sendto(
            fd,
            f.as_ptr().cast(),
            f.len(),
            0,
            (addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    rc >= 0
}

/// Sends raw Ethernet frames out of `iface` in `ns` (AF_PACKET): malformed and non-IP frames
/// the kernel's own stack would never build.
pub fn raw_frames(ns: &Netns, iface: &'static str, frames: Vec<Vec<u8>>) {
    ns.run(move || {
        for f in &frames {
            let (fd, addr) = packet_socket(iface, f);
            assert!(
                send_frame(fd, &addr, f),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: closing the socket packet_socket opened.
            unsafe { libc::close(fd) };
        }
    });
}

/// Sends many well-formed Ethernet frames out of `iface` in `ns` through one AF_PACKET socket
/// ([`raw_frames`] opens one per frame, and closing one waits for an RCU grace period: fine for
/// a few crafted frames, not for a hundred thousand). A full queue is waited out.
pub fn raw_burst(ns: &Netns, iface: &'static str, frames: Vec<Vec<u8>>) {
    let Some(first) = frames.first() else {
        return;
    };
    let mac = first[..6].to_vec();
    ns.run(move || {
        let (fd, addr) = packet_socket(iface, &mac);
        for f in &frames {
            let mut tries = 0;
            while !send_frame(fd, &addr, f) {
                let e = std::io::Error::last_os_error();
                tries += 1;
                assert!(
                    e.raw_os_error() == Some(libc::ENOBUFS) && tries < 1_000,
                    "sendto: {e}"
                );
                thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // SAFETY: closing the socket packet_socket opened.
        unsafe { libc::close(fd) };
    });
}

/// FNV-1a, 64 bits: enough to tell a byte stream arrived intact.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Servers {
    /// A TCP server that reads a stream to its end and answers its FNV-1a hash (16 hex digits).
    pub fn tcp_hash(&mut self, ns: &Netns, port: u16) {
        self.tcp_with(ns, port, |mut s| {
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut all = Vec::new();
                let mut buf = [0u8; 65536];
                // The client half-closes when done.
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf[..n]);
                }
                let _ = s.write_all(format!("{:016x}", fnv1a(&all)).as_bytes());
            });
        });
    }
}

/// Sends `data` over TCP from `ns` and returns the hash the server computed.
pub fn tcp_send_hash(ns: &Netns, dst: &str, port: u16, data: Vec<u8>) -> String {
    let dst = sockaddr(dst, port);
    ns.run(move || {
        let (_, r) = connect(None, dst);
        let mut s = r.expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s.write_all(&data).expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("hash");
        answer
    })
}

/// The MAC address of `iface` in `ns`, to address raw frames to it.
pub fn mac_of(ns: &Netns, iface: &str) -> [u8; 6] {
    let text = ns.sh(&["cat", &format!("/sys/class/net/{iface}/address")]);
    let mut mac = [0u8; 6];
    for (b, h) in mac.iter_mut().zip(text.trim().split(':')) {
        *b = u8::from_str_radix(h, 16).expect("a MAC address");
    }
    mac
}

/// Frames handed to the kernel per `sendmmsg` call by [`raw_flood`].
const FLOOD_BATCH: usize = 64;

/// Sends `template` out of `iface` in `ns` as fast as `threads` threads can for `secs` seconds,
/// each frame with a different IPv4 source address (bytes 26..30 of an untagged frame; each
/// thread counts up from its own block of 4M addresses, block `first_block + thread` from
/// 11.0.0.0 on, outside the cluster; runs that must not repeat sources use other blocks). Frames go in batches
/// of [`FLOOD_BATCH`] per `sendmmsg` on an `AF_PACKET` socket that bypasses the qdisc, so the
/// generator costs little more than the receive path it drives. Returns the frames the kernel
/// took.
pub fn raw_flood(
    ns: &Netns,
    iface: &'static str,
    template: Vec<u8>,
    secs: f64,
    threads: usize,
    first_block: u32,
) -> u64 {
    assert!((1..=64).contains(&threads), "1 to 64 sender threads");
    assert!(
        first_block as usize + threads <= 64,
        "64 blocks of 4M addresses from 11.0.0.0"
    );
    ns.run(move || {
        let start = std::time::Instant::now();
        let senders: Vec<_> = (0..threads)
            .map(|t| {
                let template = template.clone();
                // Threads started here inherit the namespace of this one.
                thread::spawn(move || {
                    flood_thread(iface, &template, first_block + t as u32, start, secs)
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|h| h.join().expect("flood sender panicked"))
            .sum()
    })
}

fn flood_thread(
    iface: &str,
    template: &[u8],
    block: u32,
    start: std::time::Instant,
    secs: f64,
) -> u64 {
    let (fd, addr) = packet_socket(iface, template);
    let bypass: libc::c_int = 1;
    // SAFETY: a valid socket and option buffer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const bypass).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "PACKET_QDISC_BYPASS: {}",
        std::io::Error::last_os_error()
    );
    let mut frames = vec![template.to_vec(); FLOOD_BATCH];
    let mut iov: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: f.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid; it then points at one iovec and the address.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&raw const addr).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // 4M addresses per block (11.0.0.0/10, 11.64.0.0/10, ...): no thread reaches another's.
    let mut src: u32 = 0x0b00_0000 + (block << 22);
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for v in &iov {
            src = src.wrapping_add(1);
            // SAFETY: each iovec points at a whole frame of `frames`, alive and not borrowed.
            let f = unsafe { std::slice::from_raw_parts_mut(v.iov_base.cast::<u8>(), v.iov_len) };
            f[26..30].copy_from_slice(&src.to_be_bytes());
        }
        // SAFETY: the frames, iovecs and address outlive the call, which only reads them.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), FLOOD_BATCH as u32, 0) };
        // Frames not taken keep their place; their source addresses are skipped, never reused.
        sent += u64::try_from(n).unwrap_or(0);
    }
    drop(frames);
    // SAFETY: closing the socket packet_socket opened.
    unsafe { libc::close(fd) };
    sent
}
