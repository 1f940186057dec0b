//! Just enough of a BTF reader to find where fields of kernel structures live in the running
//! kernel (`/sys/kernel/btf/vmlinux`), so that the kernel programs can read `task_struct`
//! without compiling against one kernel's headers.
//!
//! The format is the kernel's `Documentation/bpf/btf.rst`: a header, a type section of
//! variable-length records and a string section. Only struct/union members are interpreted;
//! every other kind is skipped by its size. All reads are bounds-checked.

use std::{collections::HashMap, path::Path};

use monitor_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel type information from {path}: {source}; this kernel was built without CONFIG_DEBUG_INFO_BTF=y (needed by brokerwatch): use a distribution kernel that enables it (Debian 11+, Ubuntu 20.10+, Fedora 31+)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField { strukt: String, field: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits (bitfield size already stripped).
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Composite {
    name_off: u32,
    members: Vec<Member>,
}

/// Struct and union layouts of one BTF blob.
#[derive(Debug)]
pub struct Btf {
    strings: Vec<u8>,
    /// Type id -> composite (only structs and unions are kept).
    composites: HashMap<u32, Composite>,
    /// Type id -> the id it refers to, for typedef/const/volatile/restrict/type_tag.
    modifiers: HashMap<u32, u32>,
    /// Struct name -> type id of the first complete definition.
    by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    let bytes = data
        .get(off..off + 4)
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Malformed("shorter than a header"));
        }
        if u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types = data
            .get(
                hdr_len
                    .checked_add(type_off)
                    .ok_or(BtfError::Malformed("overflow"))?..,
            )
            .and_then(|t| t.get(..type_len))
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(
                hdr_len
                    .checked_add(str_off)
                    .ok_or(BtfError::Malformed("overflow"))?..,
            )
            .and_then(|s| s.get(..str_len))
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut btf = Btf {
            strings,
            composites: HashMap::new(),
            modifiers: HashMap::new(),
            by_name: HashMap::new(),
        };
        let mut pos = 0usize;
        let mut id = 1u32;
        while pos < types.len() {
            let name_off = u32_at(types, pos)?;
            let info = u32_at(types, pos + 4)?;
            let size_or_type = u32_at(types, pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            let extra = match kind {
                1 | 14 | 17 => 4,          // int, var, decl_tag
                3 => 12,                   // array
                4 | 5 => 12 * vlen,        // struct, union
                6 | 13 => 8 * vlen,        // enum, func_proto
                15 | 19 => 12 * vlen,      // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = pos + 12 * i;
                    let raw_offset = u32_at(types, m + 8)?;
                    members.push(Member {
                        name_off: u32_at(types, m)?,
                        type_id: u32_at(types, m + 4)?,
                        bit_offset: if kind_flag {
                            raw_offset & 0x00ff_ffff
                        } else {
                            raw_offset
                        },
                    });
                }
                if kind == KIND_STRUCT && name_off != 0 {
                    if let Ok(name) = btf.string(name_off) {
                        btf.by_name.entry(name.to_owned()).or_insert(id);
                    }
                }
                btf.composites.insert(id, Composite { name_off, members });
            } else if matches!(kind, 8..=11 | 18) {
                btf.modifiers.insert(id, size_or_type);
            }
            pos = pos
                .checked_add(extra)
                .ok_or(BtfError::Malformed("overflow"))?;
            id += 1;
        }
        if pos != types.len() {
            return Err(BtfError::Malformed("type section ends inside a record"));
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::Malformed("string offset out of bounds"))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::Malformed("unterminated string"))?;
        std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Malformed("non-UTF-8 name"))
    }

    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.modifiers.get(&id) {
                Some(&next) => id = next,
                None => break,
            }
        }
        id
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous members. `field`
    /// may be a dotted path through embedded structs and unions (`f_path.dentry`).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0;
        for part in field.split('.') {
            let (off, member_type) =
                self.find_member(id, part, 0)
                    .ok_or_else(|| BtfError::NoField {
                        strukt: strukt.to_owned(),
                        field: field.to_owned(),
                    })?;
            bits += off;
            id = self.resolve(member_type);
        }
        Ok(bits / 8)
    }

    /// (bit offset, type id) of member `field` of composite `id`.
    fn find_member(&self, id: u32, field: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let comp = self.composites.get(&id)?;
        for m in &comp.members {
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id);
                if let Some((bits, ty)) = self.find_member(inner, field, depth + 1) {
                    return Some((m.bit_offset + bits, ty));
                }
            } else if self.string(m.name_off).ok() == Some(field) {
                return Some((m.bit_offset, m.type_id));
            }
        }
        let _ = comp.name_off;
        None
    }

    /// The table of offsets the kernel programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            task_pid: self.field_offset("task_struct", "pid")?,
            task_tgid: self.field_offset("task_struct", "tgid")?,
            task_real_parent: self.field_offset("task_struct", "real_parent")?,
            task_group_leader: self.field_offset("task_struct", "group_leader")?,
            task_comm: self.field_offset("task_struct", "comm")?,
            task_exit_code: self.field_offset("task_struct", "exit_code")?,
            binprm_filename: self.field_offset("linux_binprm", "filename")?,
            task_signal: self.field_offset("task_struct", "signal")?,
            signal_live: self.field_offset("signal_struct", "live")?,
            binprm_file: self.field_offset("linux_binprm", "file")?,
            file_dentry: self.field_offset("file", "f_path.dentry")?,
            file_mnt: self.field_offset("file", "f_path.mnt")?,
            dentry_name: self.field_offset("dentry", "d_name.name")?,
            dentry_parent: self.field_offset("dentry", "d_parent")?,
            mount_mnt: self.field_offset("mount", "mnt")?,
            mount_parent: self.field_offset("mount", "mnt_parent")?,
            mount_mountpoint: self.field_offset("mount", "mnt_mountpoint")?,
            vfsmount_root: self.field_offset("vfsmount", "mnt_root")?,
            sock_net: self.field_offset("sock", "__sk_common.skc_net.net")?,
            net_inum: self.field_offset("net", "ns.inum")?,
            cgroup_kn: self.field_offset("cgroup", "kn")?,
            kernfs_id: self.field_offset("kernfs_node", "id")?,
            cgroup_root: self.field_offset("cgroup", "root")?,
            root_hierarchy_id: self.field_offset("cgroup_root", "hierarchy_id")?,
            valid: 1,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob: `struct inner { int a; int b; }`,
    /// `struct outer { long x; union { int y; struct inner z; }; int w; }` plus a typedef.
    pub(crate) fn fixture() -> Vec<u8> {
        let mut strings = b"\0int\0inner\0a\0b\0outer\0x\0y\0z\0w\0long\0".to_vec();
        strings.push(0);
        let s = |name: &str| -> u32 {
            let hay = &strings;
            let needle = format!("\0{name}\0");
            hay.windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), 1 << 24, 4, 32]);
        // 2: struct inner { a @0, b @32 }
        push(&[s("inner"), (4 << 24) | 2, 8]);
        push(&[s("a"), 1, 0, s("b"), 1, 32]);
        // 3: union { y: int, z: struct inner }
        push(&[0, (5 << 24) | 2, 8]);
        push(&[s("y"), 1, 0, s("z"), 2, 0]);
        // 4: typedef of 3 (anonymous member via a typedef)
        push(&[s("long"), 8 << 24, 3]);
        // 5: struct outer { x @0, <anon> @64 (typedef->union), w @128 }
        push(&[s("outer"), (4 << 24) | 3, 24]);
        push(&[s("x"), 1, 0, 0, 4, 64, s("w"), 1, 128]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.push(1);
        blob.push(0);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_fields_through_anonymous_members() {
        let btf = Btf::parse(&fixture()).unwrap();
        assert_eq!(btf.field_offset("inner", "b").unwrap(), 4);
        assert_eq!(btf.field_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.field_offset("outer", "y").unwrap(), 8);
        assert_eq!(btf.field_offset("outer", "w").unwrap(), 16);
        // Dotted paths through embedded members, anonymous ones included.
        assert_eq!(btf.field_offset("outer", "z.b").unwrap(), 12);
        assert!(matches!(
            btf.field_offset("outer", "z.nope"),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(
            btf.field_offset("outer", "nope"),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(
            btf.field_offset("missing", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_truncated_and_garbage_input_without_panicking() {
        let blob = fixture();
        for cut in 0..blob.len() {
            let _ = Btf::parse(&blob[..cut]);
        }
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut bad = blob.clone();
        bad[8] = 0xff; // type_off far out of bounds
        assert!(Btf::parse(&bad).is_err());
    }

    #[test]
    fn running_kernel_has_the_fields_we_need() {
        // Every machine brokerwatch supports has BTF; CI runs on one.
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let offs = btf.kernel_offsets().expect("offsets");
        assert_eq!(offs.valid, 1);
        assert_eq!(
            offs.task_tgid,
            offs.task_pid + 4,
            "pid and tgid are adjacent"
        );
        // struct mount embeds its vfsmount after a few list heads; a path's dentry follows
        // its mount.
        assert!(offs.mount_mnt > 0 && offs.file_dentry == offs.file_mnt + 8);
        assert_eq!(
            offs.sock_net, 48,
            "skc_net sits at the same place on every x86-64 kernel since 4.x"
        );
    }
}
