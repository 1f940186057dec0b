//! Starting the audited command: as the invoking user when run through sudo, held at a gate
//! until its pid is registered with the kernel programs, so that not even its first
//! `connect()` can be missed.

use std::{
    ffi::OsString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
};

use crate::host::users;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("command not found: {0} (not an executable file, and not found in PATH)")]
    NotFound(String),
    #[error("cannot start {cmd}: {source}")]
    Spawn { cmd: String, source: io::Error },
    #[error("invalid SUDO_UID/SUDO_GID: {0}")]
    BadSudoIds(String),
    #[error("cannot create a pipe: {0}")]
    Pipe(io::Error),
}

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub user: Option<String>,
    pub home: Option<PathBuf>,
}

/// The user that invoked sudo, from `SUDO_UID`/`SUDO_GID`; `None` when not under sudo or
/// when sudo was used by root itself.
pub fn sudo_user(uid: Option<&str>, gid: Option<&str>) -> Result<Option<(u32, u32)>, LaunchError> {
    match (uid, gid) {
        (Some(u), Some(g)) => {
            let u: u32 = u
                .parse()
                .map_err(|_| LaunchError::BadSudoIds(u.to_owned()))?;
            let g: u32 = g
                .parse()
                .map_err(|_| LaunchError::BadSudoIds(g.to_owned()))?;
            Ok((u != 0).then_some((u, g)))
        }
        _ => Ok(None),
    }
}

/// Resolves the user's name, home and supplementary groups.
pub fn run_as(uid: u32, gid: u32) -> RunAs {
    match users::passwd(uid) {
        Some(p) => RunAs {
            uid,
            gid,
            groups: users::groups_of(&p.name, gid),
            user: Some(p.name),
            home: Some(p.home),
        },
        None => RunAs {
            uid,
            gid,
            groups: vec![gid],
            user: None,
            home: None,
        },
    }
}

/// Finds `cmd` like execvp would, in `path` (a PATH value).
pub fn resolve_command(cmd: &str, path: Option<&OsString>) -> Result<PathBuf, LaunchError> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false)
    };
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(LaunchError::NotFound(cmd.to_owned()))
        };
    }
    let default_path = OsString::from("/usr/local/bin:/usr/bin:/bin");
    std::env::split_paths(path.unwrap_or(&default_path))
        .map(|dir| dir.join(cmd))
        .find(|p| is_exec(p))
        .ok_or_else(|| LaunchError::NotFound(cmd.to_owned()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `program args` (already resolved) as `run_as`. The child stops before `exec`,
/// tells us its pid, and waits; `register(pid)` runs (e.g. to add the pid to the kernel's
/// watch table), and only then may the child exec. If `register` fails the child exits
/// without running the command.
///
/// `std::process::Command::spawn` returns only once the child has exec'd, so it runs on a
/// helper thread while this thread talks to the child through two pipes.
pub fn spawn_gated<E>(
    program: &Path,
    args: &[String],
    run_as: Option<&RunAs>,
    register: impl FnOnce(u32) -> Result<(), E>,
) -> Result<Result<std::process::Child, E>, LaunchError> {
    let cmd_name = program.display().to_string();
    let (hello_read, hello_write) = pipe()?;
    let (gate_read, gate_write) = pipe()?;
    let hello_fd = hello_write.as_raw_fd();
    let gate_fd = gate_read.as_raw_fd();
    let gate_write_fd = gate_write.as_raw_fd();
    let hello_read_fd = hello_read.as_raw_fd();

    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let ids = run_as.map(|r| (r.uid, r.gid, r.groups.clone()));
    if let Some(r) = run_as {
        if let Some(user) = &r.user {
            cmd.env("USER", user).env("LOGNAME", user);
        }
        if let Some(home) = &r.home {
            cmd.env("HOME", home);
        }
    }
    // SAFETY: the closure only makes async-signal-safe system calls (close, getpid, write,
    // read, setgroups, setgid, setuid) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(gate_write_fd);
            libc::close(hello_read_fd);
            let pid = libc::getpid() as u32;
            let bytes = pid.to_ne_bytes();
            if libc::write(hello_fd, bytes.as_ptr().cast(), 4) != 4 {
                return Err(io::Error::last_os_error());
            }
            libc::close(hello_fd);
            let mut byte = 0u8;
            loop {
                let n = libc::read(gate_fd, (&mut byte as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n == 0 {
                    return Err(io::Error::other(
                        "brokerwatch could not register the command",
                    ));
                }
                if *libc::__errno_location() != libc::EINTR {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    std::thread::scope(|scope| {
        let spawner = scope.spawn(move || {
            let res = cmd.spawn();
            // Closing our copies lets the reader below see EOF if the fork failed.
            drop(hello_write);
            drop(gate_read);
            res
        });
        let mut buf = [0u8; 4];
        let mut file = std::fs::File::from(hello_read);
        let got_pid = std::io::Read::read_exact(&mut file, &mut buf).is_ok();
        let registered = got_pid.then(|| register(u32::from_ne_bytes(buf)));
        if let Some(Ok(())) = registered {
            // SAFETY: one byte from a valid buffer to an fd we own.
            let n = unsafe { libc::write(gate_write.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            if n != 1 {
                log::warn!("cannot release {cmd_name}: {}", io::Error::last_os_error());
            }
        }
        drop(gate_write);
        let spawned = spawner.join().expect("the spawn thread does not panic");
        match registered {
            Some(Err(e)) => {
                // The child saw EOF at its gate and exited without running the command.
                if let Ok(mut child) = spawned {
                    let _ = child.wait();
                }
                Ok(Err(e))
            }
            _ => spawned.map(Ok).map_err(|source| LaunchError::Spawn {
                cmd: cmd_name.clone(),
                source,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_ids() {
        assert_eq!(
            sudo_user(Some("1000"), Some("1000")).unwrap(),
            Some((1000, 1000))
        );
        assert_eq!(sudo_user(Some("0"), Some("0")).unwrap(), None);
        assert_eq!(sudo_user(None, None).unwrap(), None);
        assert!(sudo_user(Some("x"), Some("1")).is_err());
    }

    #[test]
    fn resolves_commands_like_execvp() {
        let path = OsString::from("/nonexistent:/usr/bin:/bin");
        assert!(resolve_command("sh", Some(&path)).unwrap().ends_with("sh"));
        assert!(matches!(
            resolve_command("no-such-command-brokerwatch", Some(&path)),
            Err(LaunchError::NotFound(_))
        ));
        assert!(matches!(
            resolve_command("/etc/passwd", Some(&path)),
            Err(LaunchError::NotFound(_))
        ));
    }
}
