//! Lists people already trust (hosts files, Adblock, Disconnect, DuckDuckGo, Exodus, the
//! California broker registry): [`formats`] parses their text (pure), [`load`] reads them
//! from disk and adds their entries to a [`Policy`](super::Policy) in stage two.

pub mod formats;
mod load;

pub use formats::{parse, ImportError, ImportResult, Imported};
