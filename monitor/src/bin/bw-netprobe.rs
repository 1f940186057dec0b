//! `bw-netprobe`: makes the connections the test suite and the benchmarks need, in ways a
//! shell cannot (named threads, non-blocking connects, process chains, floods).
//!
//! ```text
//! bw-netprobe [--thread NAME] [--depth N] [--spawn N] [--repeat N] ACTION...
//!   ACTION: tcp:ADDR:PORT | tcpnb:ADDR:PORT | udp:ADDR:PORT | udpconnect:ADDR:PORT
//!   ADDR:   127.0.0.1 or [::1] (any literal IP)
//! ```
//! `--depth N` runs the actions in a descendant N generations down; `--spawn N` starts N
//! short-lived children one after another, each doing the actions once.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, ExitCode},
    time::Duration,
};

#[derive(Debug, Clone)]
enum Action {
    Tcp(SocketAddr),
    TcpNonBlocking(SocketAddr),
    Udp(SocketAddr),
    UdpConnect(SocketAddr),
}

fn parse_action(s: &str) -> Result<Action, String> {
    let (kind, addr) = s.split_once(':').ok_or_else(|| format!("bad action {s}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address in {s}: {e}"))?;
    if !addr.ip().to_canonical().is_loopback() {
        return Err(format!("{addr}: bw-netprobe only talks to loopback"));
    }
    match kind {
        "tcp" => Ok(Action::Tcp(addr)),
        "tcpnb" => Ok(Action::TcpNonBlocking(addr)),
        "udp" => Ok(Action::Udp(addr)),
        "udpconnect" => Ok(Action::UdpConnect(addr)),
        _ => Err(format!("unknown action kind {kind}")),
    }
}

fn run_action(a: &Action) {
    match a {
        // Refused connections are fine: the kernel programs see the attempt.
        Action::Tcp(addr) => {
            let _ = TcpStream::connect_timeout(addr, Duration::from_secs(2));
        }
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
                let _ = s.send_to(b"bw", addr);
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
            other => {
                o.actions.push(parse_action(other)?);
                o.raw_actions.push(other.to_owned());
            }
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
