//! HTTP/1.x `Host` of a plaintext request (httparse reads the head).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    NeedMore,
    NotHttp,
    Request { host: Option<String> },
}

/// Heads longer than this are not worth waiting for.
pub const MAX_HEAD: usize = 8 * 1024;

pub fn request_host(stream: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(stream) {
        Ok(status) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|v| strip_port(v.trim()).to_ascii_lowercase())
                // Only a host name or an address names the row; anything else (escapes,
                // bidi overrides, a formula) is the sender's choice, not a destination.
                .filter(|h| super::is_host_name(h) || h.parse::<std::net::IpAddr>().is_ok());
            if status.is_partial() && host.is_none() {
                if stream.len() >= MAX_HEAD {
                    Head::NotHttp
                } else {
                    Head::NeedMore
                }
            } else {
                Head::Request { host }
            }
        }
        Err(_) => Head::NotHttp,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22, items 3 and 7: a Host header is the sender's text; only a host name or an
    // address names a row.
    #[test]
    fn host_headers_that_are_not_host_names_name_nothing() {
        for host in [
            "=cmd|' /C calc'!A0",
            "evil\u{202e}moc.test",
            "a\u{9b}31m.test",
            "x y",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(
                request_host(req.as_bytes()),
                Head::Request { host: None },
                "{host:?}"
            );
        }
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"),
            Head::Request {
                host: Some("127.0.0.1".into())
            }
        );
    }

    #[test]
    fn host_header() {
        assert_eq!(
            request_host(b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Tracker.Example:8080\r\n\r\n"),
            Head::Request {
                host: Some("tracker.example".into())
            }
        );
        assert_eq!(
            request_host(b"POST / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Head::Request {
                host: Some("::1".into())
            }
        );
    }

    #[test]
    fn partial_heads_and_non_http() {
        assert_eq!(request_host(b"GET / HTTP/1.1\r\nUser-Ag"), Head::NeedMore);
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: a.test\r\nX: partial"),
            Head::Request {
                host: Some("a.test".into())
            }
        );
        assert_eq!(request_host(&[0x16, 3, 1, 0, 5]), Head::NotHttp);
        assert_eq!(request_host(b"\x00\x01binary"), Head::NotHttp);
    }
}
