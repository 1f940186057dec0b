//! Where policies come from: the configured directory and files, and lists given with
//! `--import`.

use std::path::PathBuf;

use super::{ImportFormat, LoadError, SYSTEM_DIR};

/// A list to import given on the command line: `FORMAT:PATH[:CATEGORY]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpec {
    pub format: ImportFormat,
    pub path: PathBuf,
    pub category: Option<String>,
}

impl std::str::FromStr for ImportSpec {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, LoadError> {
        let bad = || LoadError::ImportSpec(s.to_owned(), ImportFormat::NAMES.join(", "));
        let (fmt, rest) = s.split_once(':').ok_or_else(bad)?;
        let format = ImportFormat::parse(fmt).ok_or_else(bad)?;
        let (path, category) = match rest.rsplit_once(':') {
            Some((p, c))
                if !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()) =>
            {
                (p, Some(c.to_owned()))
            }
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(bad());
        }
        if category.is_none() && !format.has_categories() {
            return Err(LoadError::ImportSpec(
                format!("{s} (this format needs :CATEGORY)"),
                ImportFormat::NAMES.join(", "),
            ));
        }
        Ok(Self {
            format,
            path: PathBuf::from(path),
            category,
        })
    }
}

/// Where policies come from.
#[derive(Debug, Clone, Default)]
pub struct PolicySources {
    /// `/etc/brokerwatch/policies.d` unless set; `None` skips it.
    pub system_dir: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    pub imports: Vec<ImportSpec>,
}

impl PolicySources {
    pub fn system_default() -> Self {
        Self {
            system_dir: Some(PathBuf::from(SYSTEM_DIR)),
            ..Self::default()
        }
    }
}
