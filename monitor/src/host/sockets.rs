//! A process's connections that were open before brokerwatch started (issue 24, item 5).
//!
//! The kernel programs see a socket when it connects; an app that has run for an hour has
//! connections nobody saw open (Zoom's HTTP/2 and WebSocket uploads). At start each watched
//! process's sockets are looked at: its descriptors that are sockets are borrowed one at a
//! time with `pidfd_getfd()` (Linux 5.6; root), asked their family, type, peer, TCP state
//! and cookie (the same cookie the kernel programs see), and closed again. Borrowing a
//! descriptor does not touch the connection: closing a copy leaves the app's open.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// At most this many descriptors are looked at per process (a process holding a million
/// sockets costs no more).
pub const MAX_FDS: usize = 4096;
/// At most this many connections are taken at a start, from all processes together.
pub const MAX_TOTAL: usize = 65_536;

/// One connected socket of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSocket {
    /// The kernel's socket cookie (`SO_COOKIE`), as the kernel programs see it.
    pub cookie: u64,
    /// TCP (`true`) or UDP.
    pub tcp: bool,
    /// The peer; IPv4-mapped IPv6 peers are given as IPv4.
    pub peer: SocketAddr,
    /// The socket's network namespace cookie (`SO_NETNS_COOKIE`, Linux 5.14; 0 before).
    pub netns: u64,
}

/// Why a process's sockets could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("cannot open process {pid} (pidfd_open): {source}")]
    Pidfd { pid: u32, source: io::Error },
    #[error("cannot list process {pid}'s descriptors: {source}")]
    Fds { pid: u32, source: io::Error },
}

/// The connected TCP (established, connecting, or closed by the peer only) and UDP sockets of `pid` (IPv4 and IPv6), at most
/// [`MAX_FDS`] descriptors looked at. A descriptor closed meanwhile, or one that cannot
/// be borrowed, is passed over. Connections the process accepted (their local port is one
/// it listens on: a meeting app's local web server) are not its own contacts.
pub fn open_sockets(pid: u32) -> Result<Vec<OpenSocket>, SocketsError> {
    let pidfd = pidfd_open(pid).map_err(|source| SocketsError::Pidfd { pid, source })?;
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|source| SocketsError::Fds { pid, source })?;
    let mut out: Vec<(OpenSocket, u16)> = Vec::new();
    let mut listening = Vec::new();
    for entry in dir.flatten().take(MAX_FDS) {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let Ok(copy) = pidfd_getfd(&pidfd, fd) else {
            continue;
        };
        match describe(&copy) {
            Some(Seen::Connected(s, local)) if !out.iter().any(|(o, _)| o.cookie == s.cookie) => {
                out.push((s, local));
            }
            Some(Seen::Listening(port)) => listening.push(port),
            _ => {}
        }
    }
    Ok(out
        .into_iter()
        .filter(|(s, local)| !(s.tcp && listening.contains(local)))
        .map(|(s, _)| s)
        .collect())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is a new descriptor we own.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

fn sockopt<T: Copy + Default>(fd: &OwnedFd, level: i32, name: i32) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: value is a T-sized buffer and len says so.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// `tcp_info.tcpi_state` values.
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;

/// An IP socket of the process, as far as it matters here.
enum Seen {
    /// Connected, with its local port.
    Connected(OpenSocket, u16),
    /// A TCP listener's local port.
    Listening(u16),
}

/// What the borrowed socket is, if it is a connected IP socket or a TCP listener.
fn describe(fd: &OwnedFd) -> Option<Seen> {
    let domain: i32 = sockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return None;
    }
    let kind: i32 = sockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let tcp = match kind {
        libc::SOCK_STREAM => true,
        libc::SOCK_DGRAM => false,
        _ => return None,
    };
    if tcp {
        // Connections the app holds: established, still connecting, or closed by the peer
        // but not yet by the app; not listeners, not ones the app is closing.
        let info: libc::tcp_info = tcp_info(fd)?;
        if info.tcpi_state == TCP_LISTEN {
            return Some(Seen::Listening(address(fd, libc::getsockname)?.port()));
        }
        if ![TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE_WAIT].contains(&info.tcpi_state) {
            return None;
        }
    }
    let peer = address(fd, libc::getpeername)?;
    let local = address(fd, libc::getsockname)?.port();
    let cookie: u64 = sockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE)?;
    let netns: u64 = sockopt(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE).unwrap_or(0);
    let open = OpenSocket {
        cookie,
        tcp,
        peer,
        netns,
    };
    Some(Seen::Connected(open, local))
}

fn tcp_info(fd: &OwnedFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info is a tcp_info-sized buffer and len says so.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

type AddressCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// The socket's peer (`getpeername`; `None`: not connected) or own address (`getsockname`).
fn address(fd: &OwnedFd, call: AddressCall) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss is large enough for any address and len says so.
    let rc = unsafe {
        call(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sa: libc::sockaddr_in =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sa.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sa: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, u16::from_be(sa.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    // Needs no privilege for one's own process (pidfd_getfd on oneself is allowed).
    #[test]
    fn sockets_open_connections_of_a_process_are_found_with_their_cookies() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect("127.0.0.1:9").unwrap();
        let unconnected = UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = open_sockets(std::process::id()).unwrap();
        let cookie = |fd: &dyn AsRawFd| {
            // SAFETY: borrowed for the call only.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
            let owned = fd.try_clone_to_owned().unwrap();
            sockopt::<u64>(&owned, libc::SOL_SOCKET, libc::SO_COOKIE).unwrap()
        };
        let tcp = found.iter().find(|s| s.cookie == cookie(&stream)).unwrap();
        assert_eq!((tcp.tcp, tcp.peer), (true, addr));
        // The connection it accepted is not a contact of its own.
        assert!(!found.iter().any(|s| s.cookie == cookie(&accepted)));
        let u = found.iter().find(|s| s.cookie == cookie(&udp)).unwrap();
        assert_eq!((u.tcp, u.peer), (false, "127.0.0.1:9".parse().unwrap()));
        // Listeners and unconnected sockets are not connections.
        assert!(!found.iter().any(|s| s.cookie == cookie(&listener)));
        assert!(!found.iter().any(|s| s.cookie == cookie(&unconnected)));
        // Still open for their owner.
        assert!(stream.peer_addr().is_ok());
    }

    #[test]
    fn sockets_a_process_that_is_gone_is_said_clearly() {
        let err = open_sockets(u32::MAX - 1).unwrap_err().to_string();
        assert!(err.starts_with("cannot open process 4294967294"), "{err}");
    }
}
