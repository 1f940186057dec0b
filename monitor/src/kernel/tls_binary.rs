//! TLS built into a program rather than loaded from a library (issue 25): Chromium and
//! Electron apps link BoringSSL in. Where the program keeps `SSL_write` among its symbols
//! the OpenSSL probe goes on the program itself; where it does not (Debian's chromium:
//! stripped, BoringSSL's hooks left in its dynamic symbols), what it sends over TLS cannot
//! be read, and the user is told so per program instead of being shown nothing.

use std::path::Path;

use object::{Object as _, ObjectSymbol as _};

/// What a program carries of TLS itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Nothing known: it uses the system's libraries (or none).
    Nothing,
    /// `SSL_write` is defined in the program: probed there.
    Symbols,
    /// BoringSSL (or OpenSSL) is linked in without symbols: not readable.
    Stripped,
}

/// Looks at `exe`'s symbol tables. Reads the ELF headers and tables only (a 300 MB
/// browser costs a few hundred KiB of reads); a file that is not ELF has nothing.
pub fn builtin_tls(exe: &Path) -> Builtin {
    let Ok(file) = std::fs::File::open(exe) else {
        return Builtin::Nothing;
    };
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Builtin::Nothing;
    };
    let defines = |name: &[u8], sym: &object::Symbol<'_, '_, &object::ReadCache<std::fs::File>>| {
        sym.name_bytes().is_ok_and(|n| n == name) && sym.is_definition()
    };
    let mut hooks = false;
    for sym in elf.dynamic_symbols() {
        if defines(b"SSL_write", &sym) {
            return Builtin::Symbols;
        }
        // BoringSSL's allocator hooks, weak and undefined, are left in programs that
        // link it in (Chromium, Electron).
        hooks |= sym
            .name_bytes()
            .is_ok_and(|n| n.starts_with(b"OPENSSL_memory_") || n.starts_with(b"BORINGSSL_"));
    }
    if elf.symbol_table().is_some() && elf.symbols().any(|s| defines(b"SSL_write", &s)) {
        return Builtin::Symbols;
    }
    if hooks {
        Builtin::Stripped
    } else {
        Builtin::Nothing
    }
}

/// What to tell about a program whose TLS cannot be read.
pub fn not_readable(exe: &Path) -> String {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{name} ({}): TLS (BoringSSL) is built into the program without symbols; what it sends over TLS cannot be read (who it talks to still is)",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_binary_chromium_is_not_readable_libssl_is_and_curl_has_nothing_built_in() {
        // Debian's chromium (installed by setup for the browser tests).
        let chromium = Path::new("/usr/lib/chromium/chromium");
        assert!(chromium.is_file(), "setup installs chromium");
        assert_eq!(builtin_tls(chromium), Builtin::Stripped);
        assert_eq!(
            builtin_tls(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")),
            Builtin::Symbols
        );
        assert_eq!(builtin_tls(Path::new("/usr/bin/curl")), Builtin::Nothing);
        assert_eq!(builtin_tls(Path::new("/etc/hostname")), Builtin::Nothing);
        assert_eq!(builtin_tls(Path::new("/nonexistent")), Builtin::Nothing);
        assert!(not_readable(chromium).starts_with("chromium (/usr/lib/chromium/chromium): "));
    }
}
