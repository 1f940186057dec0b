//! brokerwatch: see which data brokers, ad and analytics companies your meeting apps
//! talk to. The library holds everything but argument parsing, so that tests reach it.
//!
//! Flow: [`sensor`] loads the kernel programs; [`capture`] reads their records;
//! [`wire`] decodes them; [`engine`] correlates them into processes and connections;
//! [`report`] prints them; [`audit`] drives one audit.

pub mod appid;
pub mod audit;
pub mod bounded;
pub mod btf;
pub mod capture;
pub mod cgroup;
pub mod daemon;
pub mod engine;
pub mod install;
pub mod launch;
pub mod naming;
pub mod notify;
pub mod policy;
pub mod policy_cli;
pub mod preflight;
pub mod procinfo;
pub mod protocol;
pub mod report;
pub mod sensor;
pub mod watchset;
pub mod wire;
