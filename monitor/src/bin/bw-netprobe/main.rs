//! `bw-netprobe`: makes the connections the test suite and the benchmarks need, in ways a
//! shell cannot (named threads, non-blocking connects, process chains, floods).
//!
//! ```text
//! bw-netprobe [--reexec] [--thread NAME] [--depth N] [--spawn N] [--repeat N] [--out FILE]
//!             ACTION...
//!   ACTION: tcp:ADDR:PORT | tcpnb:ADDR:PORT | udp:ADDR:PORT | udpconnect:ADDR:PORT
//!           | tls:SNI@ADDR:PORT | tlsech:SNI@ADDR:PORT (with an ECH extension)
//!         | resolve:NAME:PORT   (ask 127.0.0.1:53 for NAME, then connect over TCP)
//!         | tls:SNI@ADDR:PORT   (connect, send a ClientHello naming SNI)
//!         | sleep:MS            (wait, as an app does before it goes online)
//!   ADDR:   127.0.0.1 or [::1] (any loopback literal)
//! bw-netprobe serve [--dns ADDR:PORT] [--record NAME=IP]... [--tcp ADDR:PORT]...
//!                   [--udp ADDR:PORT]...
//! ```
//! `--reexec` first executes `/proc/self/exe` with the other arguments, as Chromium starts
//! its helpers; `--depth N` runs the actions in a descendant N generations down; `--spawn N` starts N
//! short-lived children one after another, each doing the actions once; `--out FILE` appends
//! one line per connect or send to FILE: `tcp|udp ADDR ok|denied|refused|failed`
//! (`denied`: EPERM, what a blocked call gets). `serve` answers
//! DNS queries for the recorded names, accepts TCP connections (reading until the peer
//! closes), reads UDP datagrams without ever answering, prints `ready` once listening, and
//! runs until killed.

mod dns;
mod tls;

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, ExitCode},
    time::Duration,
};

/// Where `resolve:` asks.
const DNS_SERVER: &str = "127.0.0.1:53";

/// Where outcomes go (`--out`).
static OUT: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Notes the outcome of a connect or send in the `--out` file.
fn outcome(kind: &str, addr: &SocketAddr, result: &std::io::Result<()>) {
    let Some(out) = OUT.get() else { return };
    let word = match result {
        Ok(()) => "ok",
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => "denied",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
        Err(_) => "failed",
    };
    if let Ok(mut f) = out.lock() {
        let _ = writeln!(f, "{kind} {addr} {word}");
    }
}

#[derive(Debug, Clone)]
enum Action {
    Tcp(SocketAddr),
    TcpNonBlocking(SocketAddr),
    Udp(SocketAddr),
    UdpConnect(SocketAddr),
    Resolve(String, u16),
    Tls(String, SocketAddr),
    /// A ClientHello with a (GREASE-like) Encrypted Client Hello extension, as browsers send.
    TlsEch(String, SocketAddr),
    Sleep(u64),
}

fn loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("{addr}: bw-netprobe only talks to loopback"))
    }
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("bad address {s}: {e}"))?;
    loopback(addr)
}

fn parse_action(s: &str) -> Result<Action, String> {
    let (kind, rest) = s.split_once(':').ok_or_else(|| format!("bad action {s}"))?;
    match kind {
        "tcp" => Ok(Action::Tcp(socket_addr(rest)?)),
        "tcpnb" => Ok(Action::TcpNonBlocking(socket_addr(rest)?)),
        "udp" => Ok(Action::Udp(socket_addr(rest)?)),
        "udpconnect" => Ok(Action::UdpConnect(socket_addr(rest)?)),
        "resolve" => {
            let (name, port) = rest
                .rsplit_once(':')
                .and_then(|(n, p)| Some((n, p.parse().ok()?)))
                .ok_or_else(|| format!("bad action {s}: resolve:NAME:PORT"))?;
            Ok(Action::Resolve(name.to_owned(), port))
        }
        "sleep" => rest
            .parse()
            .map(Action::Sleep)
            .map_err(|_| format!("bad action {s}: sleep:MILLISECONDS")),
        "tls" | "tlsech" => {
            let (sni, addr) = rest
                .split_once('@')
                .ok_or_else(|| format!("bad action {s}: {kind}:SNI@ADDR:PORT"))?;
            let addr = socket_addr(addr)?;
            Ok(if kind == "tls" {
                Action::Tls(sni.to_owned(), addr)
            } else {
                Action::TlsEch(sni.to_owned(), addr)
            })
        }
        _ => Err(format!("unknown action kind {kind}")),
    }
}

/// Connects and sends `bytes`, then waits for the peer to close (so the bytes leave).
fn send_over_tcp(addr: &SocketAddr, bytes: &[u8]) {
    let conn = TcpStream::connect_timeout(addr, Duration::from_secs(2));
    outcome("tcp", addr, &conn.as_ref().map(|_| ()).map_err(clone_err));
    if let Ok(mut s) = conn {
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read(&mut [0u8; 16]);
    }
}

fn run_action(a: &Action) {
    match a {
        // Refused connections are fine: the kernel programs see the attempt.
        Action::Tcp(addr) => {
            let r = TcpStream::connect_timeout(addr, Duration::from_secs(2));
            outcome("tcp", addr, &r.map(|_| ()));
        }
        Action::Resolve(name, port) => {
            let server: SocketAddr = DNS_SERVER.parse().expect("constant");
            match dns::resolve(server, name) {
                Some(ip) if ip.is_loopback() => {
                    let addr = SocketAddr::new(ip, *port);
                    let r = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
                    outcome("tcp", &addr, &r.map(|_| ()));
                }
                Some(ip) => eprintln!("bw-netprobe: {name} is {ip}, not loopback: not connecting"),
                None => eprintln!("bw-netprobe: no answer for {name}"),
            }
        }
        Action::Tls(sni, addr) => send_over_tcp(addr, &tls::client_hello(sni)),
        Action::TlsEch(sni, addr) => send_over_tcp(addr, &tls::client_hello_with_ech(sni)),
        Action::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
        Action::TcpNonBlocking(addr) => {
            let domain = if addr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            // SAFETY: plain socket calls on a descriptor we own and close.
            unsafe {
                let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                let (storage, len) = sockaddr(addr);
                libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len);
                libc::close(fd);
            }
        }
        Action::Udp(addr) => {
            let bind = if addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            if let Ok(s) = UdpSocket::bind(bind) {
                let r = s.send_to(b"bw", addr).map(|_| ());
                outcome("udp", addr, &r);
                let _ = s.send_to(b"bw", addr);
            }
        }
        Action::UdpConnect(addr) => {
            let bind = if addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            if let Ok(s) = UdpSocket::bind(bind) {
                let _ = s.connect(addr);
                let _ = s.as_raw_fd();
            }
        }
    }
}

fn clone_err(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (storage, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (storage, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

struct Opts {
    thread: Option<String>,
    depth: u32,
    spawn: u32,
    repeat: u32,
    actions: Vec<Action>,
    raw_actions: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        thread: None,
        depth: 0,
        spawn: 0,
        repeat: 1,
        actions: Vec::new(),
        raw_actions: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u32, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--depth" => o.depth = num("--depth")?,
            "--spawn" => o.spawn = num("--spawn")?,
            "--repeat" => o.repeat = num("--repeat")?,
            "--thread" => o.thread = Some(it.next().ok_or("--thread needs a name")?.clone()),
            "--out" => {
                let path = it.next().ok_or("--out needs a file")?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--out {path}: {e}"))?;
                let _ = OUT.set(std::sync::Mutex::new(file));
                // Descendants (--depth, --spawn) write there too.
                o.raw_actions.extend(["--out".to_owned(), path.clone()]);
            }
            other => {
                o.actions.push(parse_action(other)?);
                o.raw_actions.push(other.to_owned());
            }
        }
    }
    Ok(o)
}

/// `serve`: DNS and TCP sinks on loopback until killed.
fn serve(args: &[String]) -> Result<(), String> {
    let mut records: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let mut dns_addr = None;
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dns" => dns_addr = Some(socket_addr(value()?)?),
            "--tcp" => tcp.push(socket_addr(value()?)?),
            "--udp" => udp.push(socket_addr(value()?)?),
            "--record" => {
                let v = value()?;
                let (name, ip) = v.split_once('=').ok_or("--record NAME=IP")?;
                let ip: IpAddr = ip.parse().map_err(|e| format!("{v}: {e}"))?;
                if !ip.is_loopback() {
                    return Err(format!("{v}: answers must be loopback addresses"));
                }
                records
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .push(ip);
            }
            other => return Err(format!("serve: unknown option {other}")),
        }
    }
    let mut threads = Vec::new();
    for addr in tcp {
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        }));
    }
    for addr in udp {
        let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while sock.recv(&mut buf).is_ok() {}
        }));
    }
    if let Some(addr) = dns_addr {
        let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        threads.push(std::thread::spawn(move || dns::serve(sock, records)));
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return match serve(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bw-netprobe serve: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(i) = args.iter().position(|a| a == "--reexec") {
        use std::os::unix::process::CommandExt as _;
        let mut rest = args.clone();
        rest.remove(i);
        let err = Command::new("/proc/self/exe").args(&rest).exec();
        eprintln!("bw-netprobe: exec /proc/self/exe: {err}");
        return ExitCode::from(2);
    }
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bw-netprobe: {e}");
            return ExitCode::from(2);
        }
    };
    let me = std::env::current_exe().expect("own path");
    if o.depth > 0 {
        let mut child_args = vec![
            "--depth".to_owned(),
            (o.depth - 1).to_string(),
            "--repeat".to_owned(),
            o.repeat.to_string(),
        ];
        if let Some(t) = &o.thread {
            child_args.extend(["--thread".to_owned(), t.clone()]);
        }
        child_args.extend(o.raw_actions.iter().cloned());
        let ok = Command::new(&me)
            .args(&child_args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if o.spawn > 0 {
        for _ in 0..o.spawn {
            let _ = Command::new(&me)
                .args(["--repeat", &o.repeat.to_string()])
                .args(&o.raw_actions)
                .status();
        }
        return ExitCode::SUCCESS;
    }
    let work = move || {
        for _ in 0..o.repeat {
            for a in &o.actions {
                run_action(a);
            }
        }
    };
    match o.thread {
        Some(name) => std::thread::Builder::new()
            .name(name)
            .spawn(work)
            .expect("thread")
            .join()
            .expect("join"),
        None => work(),
    }
    ExitCode::SUCCESS
}
