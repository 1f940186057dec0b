//! A network namespace of the test's own, with dnsmasq serving test names (CNAME chain,
//! A and AAAA) and TLS/HTTP servers on its loopback. Traffic never leaves the namespace.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Lab {
    pub netns: String,
    pub dir: PathBuf,
    /// The servers' certificate (self-signed, the lab's HTTPS names in it).
    pub cert: PathBuf,
    children: Vec<Child>,
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const TLS_PORT: u16 = 4433;
pub const HTTP_PORT: u16 = 8080;
/// HTTPS (HTTP/1.1 and WebSocket) server that reads every request and answers 200
/// (`tests/lab/https_sink.py`), on every address of the namespace.
pub const SINK_PORT: u16 = 8443;
/// HTTP/2 server (`nghttpd`), on every address of the namespace.
pub const H2_PORT: u16 = 8444;
/// The lab's scripts.
pub const LAB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab");
/// HTTP/3 port of `quic.vendor.test` (a UDP peer that reads and never answers) and of
/// `closed.vendor.test` (nothing listens: the kernel answers port unreachable).
pub const QUIC_PORT: u16 = 443;

/// The lab's page (`http://page.vendor.test:8080/`): one TLS image, two HTTP/3 ones.
pub const PAGE: &str = "<html><body>brokerwatch lab\n\
<img src=\"https://graph.facebook.com:4433/a.png\">\n\
<img src=\"https://quic.vendor.test/b.png\">\n\
<img src=\"https://closed.vendor.test/c.png\">\n\
</body></html>\n";

impl Lab {
    pub fn new(tag: &str) -> Self {
        super::require_root();
        let netns = format!("bw{tag}{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("bw-lab-{netns}"));
        std::fs::create_dir_all(&dir).unwrap();
        ok(Command::new("ip").args(["netns", "add", &netns]));
        let mut lab = Lab {
            netns: netns.clone(),
            dir: dir.clone(),
            cert: dir.join("cert.pem"),
            children: Vec::new(),
        };
        ok(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        let etc = PathBuf::from("/etc/netns").join(&netns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions attempts:1 timeout:2\n",
        )
        .unwrap();
        // A name only in the namespace's hosts file (`ip netns exec` mounts it over
        // /etc/hosts): no DNS packet ever carries it.
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n::1 localhost\n127.0.0.11 hosts.only.test\n",
        )
        .unwrap();
        // Names: api.vendor.test -> CNAME edge.tracker.test -> 127.0.0.3 and ::1;
        // broker.test -> 127.0.0.2; the browser page and its resources (AAAA records too:
        // Firefox asks for both).
        let log = dir.join("dnsmasq.log");
        lab.spawn(&[
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--port=53",
            "--user=root",
            "--host-record=edge.tracker.test,127.0.0.3,::1",
            "--cname=api.vendor.test,edge.tracker.test",
            "--host-record=broker.test,127.0.0.2",
            "--host-record=page.vendor.test,127.0.0.1",
            "--host-record=graph.facebook.com,127.0.0.7",
            "--host-record=quic.vendor.test,127.0.0.8",
            "--host-record=closed.vendor.test,127.0.0.9",
            // Two names on one address (a CDN's): a meeting vendor's and a broker's.
            "--host-record=tls.meetingvendor.test,127.0.0.10",
            "--host-record=sales.linkedin.com,127.0.0.10",
            "--local=/test/",
            "--local=/facebook.com/",
            "--local=/linkedin.com/",
            "--log-queries",
            &format!("--log-facility={}", log.display()),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ]);
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        ok(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=lab.test",
                // Browsers check names: the lab's HTTPS hosts are in the certificate.
                "-addext",
                "subjectAltName=DNS:lab.test,DNS:sales.linkedin.com,DNS:tls.meetingvendor.test",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        // One server per family: OpenSSL's IPv6 listener is IPv6-only.
        for family in ["-4", "-6"] {
            lab.spawn(&[
                "openssl",
                "s_server",
                family,
                "-quiet",
                "-www",
                "-accept",
                &TLS_PORT.to_string(),
                "-key",
                key.to_str().unwrap(),
                "-cert",
                cert.to_str().unwrap(),
            ]);
        }
        let sink = format!("{LAB_DIR}/https_sink.py");
        lab.spawn(&[
            "python3",
            &sink,
            "0.0.0.0",
            &SINK_PORT.to_string(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ]);
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), PAGE).unwrap();
        lab.spawn(&[
            "python3",
            "-m",
            "http.server",
            &HTTP_PORT.to_string(),
            "--bind",
            "::",
            "--directory",
            www.to_str().unwrap(),
        ]);
        lab.spawn(&[
            "nghttpd",
            "--echo-upload",
            "-d",
            www.to_str().unwrap(),
            &H2_PORT.to_string(),
            key.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        lab.spawn(&[
            super::PROBE,
            "serve",
            "--udp",
            &format!("127.0.0.8:{QUIC_PORT}"),
        ]);
        lab.wait_ready();
        lab
    }

    fn spawn(&mut self, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        self.children.push(child);
    }

    /// A command run inside the namespace (argv for `brokerwatch audit -- ...`).
    pub fn exec(&self, argv: &[&str]) -> Vec<String> {
        let mut v = vec![
            "ip".to_owned(),
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
        ];
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let dns = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.netns,
                    "getent",
                    "hosts",
                    "broker.test",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            let tls = Command::new("ip")
                .args(["netns", "exec", &self.netns, "bash", "-c"])
                .arg(format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{TLS_PORT} && exec 4<>/dev/tcp/::1/{TLS_PORT} && exec 5<>/dev/tcp/127.0.0.1/{HTTP_PORT} && exec 6<>/dev/tcp/127.0.0.1/{SINK_PORT} && exec 7<>/dev/tcp/127.0.0.1/{H2_PORT}"
                ))
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if dns && tls {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "lab servers did not start (dns {dns}, tcp {tls})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.netns));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
