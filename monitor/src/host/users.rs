//! The user and group database (NSS): names, homes and groups of uids. Every look-up goes
//! through the reentrant `getpwuid_r`/`getgrnam_r`, here and nowhere else.

use std::{
    collections::HashMap,
    ffi::{CStr, CString, OsStr},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
};

/// The effective uid of this process (whose rights file checks and ownership use).
pub fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// The real uid of this process (whose home and files the desktop agent uses).
pub fn uid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getuid() }
}

/// One entry of the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

/// The password entry of `uid`, if the database has one.
pub fn passwd(uid: u32) -> Option<Passwd> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the reads of pwd's strings.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    let home = if pwd.pw_dir.is_null() {
        PathBuf::new()
    } else {
        // SAFETY: as above, for pw_dir.
        let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
        PathBuf::from(OsStr::from_bytes(dir.to_bytes()))
    };
    Some(Passwd {
        uid,
        gid: pwd.pw_gid,
        name: name.to_string_lossy().into_owned(),
        home,
    })
}

/// The uid of user `name`, if the database has one.
pub fn uid_of(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; nothing is read after buf goes.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// Subordinate uid ranges (`/etc/subuid`, lines `user:first:count`): the uids a user may
/// map into user namespaces of their own. Every per-user bound counts them as their
/// owner's, so that one user cannot multiply a quota by 65,536.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubUids {
    /// (first, count, owner uid).
    ranges: Vec<(u32, u32, u32)>,
}

/// The largest `/etc/subuid` read.
const MAX_SUBUID_BYTES: u64 = 1 << 20;

impl SubUids {
    /// The machine's `/etc/subuid` (none when it is missing or unreadable).
    pub fn load() -> Self {
        let path = std::path::Path::new("/etc/subuid");
        let small_file =
            std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_SUBUID_BYTES);
        match small_file.then(|| std::fs::read_to_string(path)) {
            Some(Ok(text)) => Self::parse(&text, uid_of),
            _ => Self::default(),
        }
    }

    /// Parses `user:first:count` lines; `user` is a name (`resolve` gives its uid) or a uid.
    pub fn parse(text: &str, resolve: impl Fn(&str) -> Option<u32>) -> Self {
        let ranges = text
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().split(':');
                let (who, first, count) = (f.next()?, f.next()?, f.next()?);
                let owner = who.parse().ok().or_else(|| resolve(who))?;
                Some((first.parse().ok()?, count.parse().ok()?, owner))
            })
            .collect();
        Self { ranges }
    }

    /// Every range: (first, count, owner uid).
    pub fn ranges(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.ranges.iter().copied()
    }

    /// Whose `uid` is: the owner of the range it falls in, else itself.
    pub fn owner(&self, uid: u32) -> u32 {
        self.ranges
            .iter()
            .find(|(first, count, _)| uid >= *first && uid - first < *count)
            .map_or(uid, |r| r.2)
    }
}

/// Every group of user `name` whose primary group is `gid` (supplementary ones included).
pub fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else {
        return vec![gid];
    };
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: valid pointers; n holds the capacity and receives the count.
    let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    if rc < 0 {
        return vec![gid];
    }
    groups.truncate(n.max(0) as usize);
    groups
}

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: a zeroed group is a valid out-parameter for getgrnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// Whether `uid` is root or a member (primary or supplementary) of group `gid`.
pub fn in_group(uid: u32, gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(gid) = gid else { return false };
    passwd(uid).is_some_and(|p| p.gid == gid || groups_of(&p.name, p.gid).contains(&gid))
}

/// uid -> user name, cached.
#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, Option<String>>,
}

impl UserNames {
    pub fn name(&mut self, uid: u32) -> Option<String> {
        self.cache
            .entry(uid)
            .or_insert_with(|| passwd(uid).map(|p| p.name))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22: subordinate uids counted as users of their own for the per-user caps.
    #[test]
    fn users_subordinate_uids_belong_to_their_owner() {
        let text = "alice:100000:65536\n1002:200000:10\nbroken line\nnobody-here:300000:5\n";
        let subs = SubUids::parse(text, |n| (n == "alice").then_some(1001));
        assert_eq!(subs.owner(100_000), 1001);
        assert_eq!(subs.owner(165_535), 1001);
        assert_eq!(subs.owner(165_536), 165_536);
        assert_eq!(subs.owner(200_009), 1002);
        assert_eq!(subs.owner(300_001), 300_001, "an unknown name owns nothing");
        assert_eq!(subs.owner(1000), 1000);
        assert_eq!(uid_of("root"), Some(0));
    }

    #[test]
    fn users_root_has_a_name_home_and_group() {
        assert_eq!(UserNames::default().name(0).as_deref(), Some("root"));
        let root = passwd(0).expect("root is in every passwd database");
        assert_eq!((root.gid, root.name.as_str()), (0, "root"));
        assert!(groups_of("root", 0).contains(&0));
        assert_eq!(group_gid("root"), Some(0));
        assert_eq!(group_gid("no-such-group-brokerwatch"), None);
    }

    #[test]
    fn users_membership_root_always_strangers_never() {
        assert!(in_group(0, None));
        assert!(!in_group(65534, None));
        assert!(
            !in_group(4_000_000_000, Some(0)),
            "a uid with no passwd entry"
        );
    }
}
