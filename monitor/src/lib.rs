//! brokerwatch: see which data brokers, ad and analytics companies your meeting apps
//! talk to. The library holds everything but argument parsing, so that tests reach it.
//!
//! The modules follow the data, and none imports a stage after its own (a test checks it):
//!
//! 1. [`defaults`], [`bounded`], [`display`]: settings defined once, bounded maps, text
//!    made safe to show.
//! 2. [`host`]: what /proc, cgroups and the user database say.
//! 3. [`kernel`]: the only code that talks to aya: load, attach, read records, decode them.
//! 4. [`naming`]: DNS / TLS / QUIC / HTTP names for destinations; [`inspect`]: what watched
//!    apps sent (plaintext decoded and searched for identifiers, opt-in).
//! 5. [`engine`]: records to processes and aggregated connections.
//! 6. [`policy`]: apps, destinations, rules.
//! 7. [`finding`]: connection + names + verdict -> what a contact means; [`leak`]: inspector
//!    row + process + verdict -> what an app sent to whom.
//! 8. [`watch`], [`protocol`], [`report`]: which apps the kernel watches; the daemon's typed
//!    messages; what apps talked to, as people read it.
//! 9. [`session`]: the one pipeline every way in runs (sensor, ring, engine, watched apps,
//!    blocking, findings).
//! 10. Sinks, which never import each other: [`audit`], [`daemon`], [`notify`], [`client`],
//!     [`install`].
//! 11. [`cli`]: argument definitions, converted into the sinks' options.

pub mod audit;
pub mod bounded;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod defaults;
pub mod display;
pub mod engine;
pub mod finding;
pub mod host;
pub mod inspect;
pub mod install;
pub mod kernel;
pub mod leak;
pub mod naming;
pub mod notify;
pub mod policy;
pub mod protocol;
pub mod report;
pub mod session;
pub mod watch;

#[cfg(test)]
mod layout_tests;
