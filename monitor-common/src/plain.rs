//! Wire types of the plaintext sensor (`monitor-ebpf`'s `plain`): what a watched process
//! hands its TLS library to send, copied in bounded chunks before the library encrypts it.

use core::mem::size_of;

/// Bytes of one [`PlainData`] chunk.
pub const PLAIN_CHUNK: usize = 4096;
/// Chunks copied of one write at most: the first `PLAIN_CHUNKS * PLAIN_CHUNK` bytes (16 KiB)
/// are read; the rest of a longer write is counted by userspace from `total`, never read.
pub const PLAIN_CHUNKS: u32 = 4;

/// The TLS library a write went through (which uprobe saw it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsLib {
    /// OpenSSL (`SSL_write`, `SSL_write_ex`): curl, python3, Qt apps, Zoom's own copy.
    OpenSsl = 1,
    /// GnuTLS (`gnutls_record_send`): wget, gnutls-cli, GNOME apps.
    GnuTls = 2,
    /// NSPR (`PR_Write`, `PR_Send`): Firefox and Thunderbird (NSS's SSL layer sits under it).
    Nspr = 3,
}

impl TlsLib {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::OpenSsl),
            2 => Some(Self::GnuTls),
            3 => Some(Self::Nspr),
            _ => None,
        }
    }
}

/// Payload of [`crate::EventKind::Plaintext`]: one chunk of one write.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PlainData {
    /// The library's handle of the connection (`SSL *`, `gnutls_session_t`, `PRFileDesc *`):
    /// writes with the same handle in one process belong to one TLS connection.
    pub conn: u64,
    /// Bytes the app asked to write in this call.
    pub total: u64,
    /// Where this chunk starts in the write.
    pub offset: u32,
    /// Bytes of `data` in use (0: the app's buffer could not be read).
    pub len: u32,
    /// [`TlsLib`].
    pub lib: u32,
    pub _pad: u32,
    pub data: [u8; PLAIN_CHUNK],
}

const _: () = assert!(size_of::<PlainData>() == 32 + PLAIN_CHUNK);
