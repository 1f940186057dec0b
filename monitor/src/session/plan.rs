//! What a session watches and how, checked against the machine before anything is loaded:
//! the step from parsed arguments (a [`Target`]) to a [`Plan`] (the command found in PATH,
//! the user it runs as under sudo, whether systemd makes its scope). Resolving reads the
//! system; the plan itself is plain data.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use super::launch::{self, LaunchError, RunAs};
use crate::{
    defaults,
    kernel::{AttachScope, SensorOptions},
};

/// What to watch, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every process.
    All,
    /// Apps by policy id / group, or bare process names.
    Apps(Vec<String>),
    /// Launch this command and watch its process tree.
    Command(Vec<String>),
}

impl Target {
    /// The command to launch, if that is the target.
    pub fn command(&self) -> Option<&[String]> {
        match self {
            Self::Command(argv) => Some(argv),
            _ => None,
        }
    }
}

/// What to watch, resolved.
#[derive(Debug, Clone)]
pub enum Watch {
    /// Nothing yet: the caller names processes itself (tests, benches).
    Nothing,
    /// Every process.
    All,
    /// Apps by policy id / group, or bare process names.
    Apps(Vec<String>),
    /// A command to launch under watch.
    Command(Launch),
}

/// A command to launch, found and ready.
#[derive(Debug, Clone)]
pub struct Launch {
    /// As the user gave it.
    pub argv: Vec<String>,
    /// The command's name (its file name), which names its watch.
    pub label: String,
    /// The executable `argv[0]` resolved to.
    pub exe: PathBuf,
    /// What is executed: the command, or `systemd-run` wrapping it in a scope.
    pub exec_path: PathBuf,
    pub exec_args: Vec<String>,
    /// Who it runs as (the user who invoked sudo), unless `systemd-run` drops to them.
    pub run_as: Option<RunAs>,
    /// brokerwatch makes a cgroup for it (systemd does not manage cgroups here).
    pub own_cgroup: bool,
}

/// Whether the kernel denies what `block` rules (and users' blocks) cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforce {
    /// No: such contacts are reported as would-be blocks (an audit without `--enforce`).
    Off,
    /// Yes, and a session that cannot fails (`audit --enforce`).
    Must,
    /// Yes where it can; when it cannot, monitoring goes on and the reason is kept (the
    /// daemon).
    Try,
}

/// A session's plan: what to watch, the sensor's settings, whether block rules deny.
#[derive(Debug, Clone)]
pub struct Plan {
    pub watch: Watch,
    pub sensor: SensorOptions,
    pub enforce: Enforce,
}

/// What resolving a plan reads of the machine and the environment.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    pub path: Option<OsString>,
    pub sudo_uid: Option<String>,
    pub sudo_gid: Option<String>,
    /// systemd manages cgroups (`/run/systemd/system` exists).
    pub systemd: bool,
}

impl HostEnv {
    pub fn current() -> Self {
        Self {
            path: std::env::var_os("PATH"),
            sudo_uid: std::env::var("SUDO_UID").ok(),
            sudo_gid: std::env::var("SUDO_GID").ok(),
            systemd: Path::new(defaults::SYSTEMD_RUNTIME).is_dir(),
        }
    }
}

impl Plan {
    /// A plan for `target`. Only an app watch may run its programs where the apps live;
    /// every process and a launched command need them at the cgroup root (the command's
    /// processes stay watched wherever they move: `flatpak run` and `systemd-run --scope`
    /// move them).
    pub fn resolve(
        target: &Target,
        mut sensor: SensorOptions,
        enforce: bool,
        env: &HostEnv,
    ) -> Result<Self, LaunchError> {
        if !matches!(target, Target::Apps(_)) {
            sensor.attach = AttachScope::Root;
        }
        let watch = match target {
            Target::All => Watch::All,
            Target::Apps(names) => Watch::Apps(names.clone()),
            Target::Command(argv) => Watch::Command(Launch::resolve(argv, env)?),
        };
        Ok(Self {
            watch,
            sensor,
            enforce: if enforce { Enforce::Must } else { Enforce::Off },
        })
    }

    /// Load the programs and watch nothing (the caller watches processes itself).
    pub fn bare(sensor: SensorOptions) -> Self {
        Self {
            watch: Watch::Nothing,
            sensor,
            enforce: Enforce::Off,
        }
    }
}

impl Launch {
    /// Finds `argv[0]` like execvp would, decides who it runs as, and where systemd
    /// manages cgroups wraps it in a transient scope of its own (`systemd-run --scope`,
    /// which executes the command in place, keeping the watched pid).
    pub fn resolve(argv: &[String], env: &HostEnv) -> Result<Self, LaunchError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LaunchError::NotFound(String::new()))?;
        let exe = launch::resolve_command(program, env.path.as_ref())?;
        let run_as = launch::sudo_user(env.sudo_uid.as_deref(), env.sudo_gid.as_deref())?
            .map(|(uid, gid)| launch::run_as(uid, gid));
        let label = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(program)
            .to_owned();
        let systemd_run = env
            .systemd
            .then(|| launch::resolve_command("systemd-run", env.path.as_ref()).ok())
            .flatten();
        let (exec_path, exec_args, run_as) = match systemd_run {
            Some(systemd_run) => (systemd_run, scope_args(&exe, args, run_as.as_ref()), None),
            None => (exe.clone(), args.to_vec(), run_as),
        };
        Ok(Self {
            argv: argv.to_vec(),
            label,
            exe,
            exec_path,
            exec_args,
            run_as,
            own_cgroup: !env.systemd,
        })
    }
}

/// `systemd-run`'s arguments for running `program args` in a scope of its own. It needs
/// root to create the scope and drops to the user itself.
fn scope_args(program: &Path, args: &[String], run_as: Option<&RunAs>) -> Vec<String> {
    let mut a = vec![
        "--scope".to_owned(),
        "--quiet".to_owned(),
        "--collect".to_owned(),
        format!("--unit=brokerwatch-audit-{}", std::process::id()),
    ];
    if let Some(r) = run_as {
        a.push(format!("--uid={}", r.uid));
        a.push(format!("--gid={}", r.gid));
    }
    a.extend(["--".to_owned(), program.display().to_string()]);
    a.extend(args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(systemd: bool) -> HostEnv {
        HostEnv {
            path: Some("/usr/bin:/bin".into()),
            sudo_uid: None,
            sudo_gid: None,
            systemd,
        }
    }

    #[test]
    fn plan_runs_a_command_at_the_root_in_a_cgroup_of_its_own_without_systemd() {
        let target = Target::Command(vec!["sh".into(), "-c".into(), "true".into()]);
        let opts = SensorOptions {
            attach: AttachScope::Cgroups,
            ..SensorOptions::default()
        };
        let plan = Plan::resolve(&target, opts, false, &env(false)).unwrap();
        assert_eq!(plan.sensor.attach, AttachScope::Root);
        let Watch::Command(l) = &plan.watch else {
            panic!("{plan:?}")
        };
        assert_eq!(l.label, "sh");
        assert!(l.exe.ends_with("sh"), "{l:?}");
        assert_eq!(l.exec_path, l.exe);
        assert_eq!(l.exec_args, ["-c", "true"]);
        assert!(l.own_cgroup);
    }

    #[test]
    fn plan_wraps_a_command_in_a_systemd_scope_where_systemd_manages_cgroups() {
        let target = Target::Command(vec!["sh".into()]);
        let e = env(true);
        let Ok(plan) = Plan::resolve(&target, SensorOptions::default(), false, &e) else {
            panic!("resolves")
        };
        let Watch::Command(l) = &plan.watch else {
            panic!()
        };
        assert!(!l.own_cgroup);
        if launch::resolve_command("systemd-run", e.path.as_ref()).is_ok() {
            assert!(l.exec_path.ends_with("systemd-run"));
            assert_eq!(&l.exec_args[..3], ["--scope", "--quiet", "--collect"]);
            assert_eq!(l.exec_args.last().map(String::as_str), l.exe.to_str());
        }
    }

    #[test]
    fn plan_keeps_an_app_watch_where_asked_and_names_a_missing_command() {
        let opts = SensorOptions {
            attach: AttachScope::Cgroups,
            ..SensorOptions::default()
        };
        let apps = Target::Apps(vec!["zoom".into()]);
        let plan = Plan::resolve(&apps, opts, true, &env(false)).unwrap();
        assert_eq!(plan.sensor.attach, AttachScope::Cgroups);
        assert_eq!(plan.enforce, Enforce::Must);
        let missing = Target::Command(vec!["no-such-command-here".into()]);
        let err = Plan::resolve(&missing, SensorOptions::default(), false, &env(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-command-here"), "{err}");
        let bad_sudo = HostEnv {
            sudo_uid: Some("x".into()),
            sudo_gid: Some("1".into()),
            ..env(false)
        };
        let cmd = Target::Command(vec!["sh".into()]);
        assert!(Plan::resolve(&cmd, SensorOptions::default(), false, &bad_sudo).is_err());
    }
}
