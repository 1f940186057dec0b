//! A real systemd-resolved in a lab's network namespace (issue 24, item 4), for apps that
//! resolve through `nss-resolve` (varlink) and never see a DNS packet.
//!
//! `cargo xtask setup` unpacks systemd-resolved and `libnss_resolve.so.2` of the installed
//! systemd's version into its cache (not installed: the package would take over the
//! machine's resolv.conf). Here resolved runs as `nobody` in a mount namespace of its own
//! (tmpfs over `/run/systemd` and `/etc/systemd`, an `nsswitch.conf` with `hosts: resolve`),
//! forwarding to the lab's dnsmasq; apps are run in its namespaces with [`Resolved::exec`].

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::lab::Lab;

/// Where `cargo xtask setup` unpacked systemd-resolved.
fn unpacked() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("brokerwatch/systemd-resolved")
}

pub struct Resolved {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip").args(args).status().unwrap().success();
    assert!(ok, "ip {args:?} failed");
}

impl Resolved {
    /// Starts systemd-resolved in `lab`'s namespace; returns once its varlink socket is up.
    pub fn start(lab: &Lab) -> Self {
        let dir = unpacked();
        let bin = dir.join("lib/systemd/systemd-resolved");
        assert!(
            bin.is_file()
                && dir
                    .join("usr/lib/x86_64-linux-gnu/libnss_resolve.so.2")
                    .is_file(),
            "systemd-resolved is not unpacked in {}: run `cargo xtask setup`",
            dir.display()
        );
        // resolved takes a namespace with nothing but loopback for offline ("network
        // down"): a veth pair of the namespace's own, with an address and a default route
        // (nothing leaves the namespace).
        let ns = lab.netns.as_str();
        ip(&[
            "-n", ns, "link", "add", "bwr0", "type", "veth", "peer", "name", "bwr1",
        ]);
        ip(&["-n", ns, "addr", "add", "10.255.0.1/24", "dev", "bwr0"]);
        ip(&["-n", ns, "link", "set", "bwr0", "up"]);
        ip(&["-n", ns, "link", "set", "bwr1", "up"]);
        ip(&["-n", ns, "route", "add", "default", "dev", "bwr0"]);
        let conf = lab.dir.join("resolved.conf");
        std::fs::write(
            &conf,
            "[Resolve]\nDNS=127.0.0.1\nDNSStubListener=no\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\n",
        )
        .unwrap();
        let nss = lab.dir.join("nsswitch.conf");
        std::fs::write(
            &nss,
            "passwd: files\ngroup: files\nhosts: resolve [!UNAVAIL=return]\n",
        )
        .unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/resolve && \
             chown nobody /run/systemd/resolve && mount -t tmpfs tmpfs /etc/systemd && \
             cp {conf} /etc/systemd/resolved.conf && mount --bind {nss} /etc/nsswitch.conf && \
             exec setpriv --reuid=nobody --regid=nogroup --clear-groups \
             --inh-caps=+setpcap --ambient-caps=+setpcap {bin}",
            conf = conf.display(),
            nss = nss.display(),
            bin = bin.display()
        );
        let log = lab.dir.join("resolved.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "unshare",
                "-m",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let me = Resolved { child, dir, log };
        // ip, unshare, sh and setpriv all exec: the child's pid is resolved's.
        let socket = PathBuf::from(format!(
            "/proc/{}/root/run/systemd/resolve/io.systemd.Resolve",
            me.child.id()
        ));
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "systemd-resolved did not start:\n{}",
                std::fs::read_to_string(&me.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// `argv` run in resolved's namespaces, resolving through it (`nss-resolve`).
    pub fn exec(&self, argv: &[&str]) -> Vec<String> {
        let pid = self.child.id().to_string();
        let lib = self.dir.join("usr/lib/x86_64-linux-gnu");
        let mut v: Vec<String> = ["nsenter", "-t", &pid, "-m", "-n", "--", "env"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(format!("LD_LIBRARY_PATH={}", lib.display()));
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
