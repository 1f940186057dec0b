//! Policies: which processes are which app (this module's `apps`), later which destinations
//! belong to whom and what to do about it. Built-in defaults are compiled in from
//! `policies/`.

pub mod apps;

pub use apps::{AppDef, AppSet, PolicyError};
