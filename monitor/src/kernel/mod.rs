//! The kernel side, as seen from userspace: the only modules that talk to aya.
//!
//! [`preflight`] checks privileges and kernel support before anything is loaded;
//! [`btf`] reads structure offsets from the running kernel; [`sensor`] loads, attaches and
//! steers the programs ([`block`]: the tables of what they deny); [`capture`] drains their ring buffer; [`wire`] decodes its records
//! into typed events.

pub mod attach;
pub mod block;
pub mod btf;
pub mod capture;
pub mod preflight;
pub mod sensor;
pub mod wire;

pub use attach::Hooks;
pub use block::{BlockError, BlockTables};
pub use capture::Capture;
pub use sensor::{AttachScope, KernelCounters, ProgramStats, Sensor, SensorError, SensorOptions};
