//! The kernel side, as seen from userspace: the only modules that talk to aya.
//!
//! [`programs`] declares the kernel object's programs and maps; [`preflight`] checks
//! privileges and kernel support before anything is loaded; [`btf`] reads structure
//! offsets from the running kernel; [`sensor`] loads and steers the programs, [`attach`]
//! decides where the cgroup programs run ([`block`]: the tables of what they deny;
//! [`budget`]: each user's record budget);
//! [`libc_probes`] attaches the uprobes on the C library; [`tls_probes`] those on the TLS
//! libraries' write calls, per watched process; [`capture`] drains their ring
//! buffer; [`wire`] decodes its records into typed events;
//! [`error`] says what went wrong; [`floor`] attaches empty programs for the benchmarks.

pub mod attach;
pub mod block;
pub mod btf;
pub mod budget;
pub mod capture;
pub mod error;
pub mod floor;
pub mod libc_probes;
pub mod preflight;
pub mod programs;
pub mod sensor;
pub mod tls_binary;
pub mod tls_probes;
pub mod wire;

pub use attach::Hooks;
pub use block::{BlockError, BlockTables};
pub use budget::{BudgetSettings, FoldedCalls, UserOver};
pub use capture::Capture;
pub use sensor::{AttachScope, KernelCounters, ProgramStats, Sensor, SensorError, SensorOptions};
