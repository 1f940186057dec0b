//! The categories of destinations, in one table: how people name and count them, the
//! colour the report draws them in, and which come first. Policies may add categories of
//! their own (lower-case, `-` separated); those are shown by their id.

use serde::{Deserialize, Serialize};

/// What brokerwatch knows of a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryInfo {
    /// The id policies use (`data-broker`).
    pub id: &'static str,
    /// Other ids that mean the same (older or imported spellings).
    pub aliases: &'static [&'static str],
    /// One of them, counted: "1 data broker".
    pub singular: &'static str,
    /// Several: "3 data brokers".
    pub plural: &'static str,
    /// In a sentence: "Zoom contacted a data broker".
    pub phrase: &'static str,
    /// The report's colour (CSS).
    pub colour: &'static str,
    /// Headlines name lower ranks first: data brokers and social SDKs are why brokerwatch
    /// exists.
    pub rank: u8,
}

/// Every category brokerwatch knows, the built-in policy's first.
pub const CATEGORIES: &[CategoryInfo] = &[
    CategoryInfo {
        id: "data-broker",
        aliases: &[],
        singular: "data broker",
        plural: "data brokers",
        phrase: "a data broker",
        colour: "#d7263d",
        rank: 0,
    },
    CategoryInfo {
        id: "social-sdk",
        aliases: &[],
        singular: "social-media SDK",
        plural: "social-media SDKs",
        phrase: "a social-media SDK",
        colour: "#7b2cbf",
        rank: 1,
    },
    CategoryInfo {
        id: "ad-attribution",
        aliases: &["advertising"],
        singular: "ad company",
        plural: "ad companies",
        phrase: "an ad tracker",
        colour: "#f77f00",
        rank: 2,
    },
    CategoryInfo {
        id: "product-analytics",
        aliases: &["analytics"],
        singular: "analytics company",
        plural: "analytics companies",
        phrase: "an analytics service",
        colour: "#1b98e0",
        rank: 2,
    },
    CategoryInfo {
        id: "session-replay",
        aliases: &[],
        singular: "session-replay company",
        plural: "session-replay companies",
        phrase: "a session-replay service",
        colour: "#2a9d8f",
        rank: 2,
    },
    CategoryInfo {
        id: "crash-reporting",
        aliases: &[],
        singular: "crash-reporting service",
        plural: "crash-reporting services",
        phrase: "a crash reporter",
        colour: DEFAULT_COLOUR,
        rank: 2,
    },
];

/// The colour of a category the table does not know.
const DEFAULT_COLOUR: &str = "#6c757d";
/// How a sentence names a category the table does not know.
const DEFAULT_PHRASE: &str = "a tracker";
/// Where a category the table does not know goes in a headline.
const DEFAULT_RANK: u8 = 2;

/// The categories the built-in policy uses (policies may add their own).
pub fn known_ids() -> impl Iterator<Item = &'static str> {
    CATEGORIES.iter().map(|c| c.id)
}

/// A destination's category, as the policy names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Category(String);

impl Category {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The table's row for it, if brokerwatch knows it.
    pub fn info(&self) -> Option<&'static CategoryInfo> {
        info(&self.0)
    }

    /// "a data broker" (in a sentence).
    pub fn phrase(&self) -> &'static str {
        self.info().map_or(DEFAULT_PHRASE, |c| c.phrase)
    }

    /// "1 data broker", "3 analytics companies".
    pub fn count(&self, n: usize) -> String {
        match (self.info(), n) {
            (Some(c), 1) => format!("1 {}", c.singular),
            (Some(c), n) => format!("{n} {}", c.plural),
            (None, n) => format!("{n} {}", self.0),
        }
    }

    pub fn colour(&self) -> &'static str {
        self.info().map_or(DEFAULT_COLOUR, |c| c.colour)
    }

    pub fn rank(&self) -> u8 {
        self.info().map_or(DEFAULT_RANK, |c| c.rank)
    }

    /// The id as words ("social sdk").
    pub fn words(&self) -> String {
        self.0.replace('-', " ")
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

impl From<&str> for Category {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Category {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// The table's row for a category id or alias.
pub fn info(id: &str) -> Option<&'static CategoryInfo> {
    CATEGORIES
        .iter()
        .find(|c| c.id == id || c.aliases.contains(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_table_counts_phrases_and_ranks_known_and_unknown_ids() {
        let broker = Category::from("data-broker");
        assert_eq!(broker.count(1), "1 data broker");
        assert_eq!(broker.count(3), "3 data brokers");
        assert_eq!(broker.phrase(), "a data broker");
        assert!(broker.rank() < Category::from("social-sdk").rank());
        // Aliases are the same category.
        assert_eq!(
            Category::from("advertising").info(),
            Category::from("ad-attribution").info()
        );
        // A category a policy made up is shown by its id.
        let own = Category::from("email-tracking");
        assert_eq!(own.count(2), "2 email-tracking");
        assert_eq!(own.phrase(), "a tracker");
        assert_eq!(own.colour(), DEFAULT_COLOUR);
        assert_eq!(own.words(), "email tracking");
        // Every id is unique, and no alias is another row's id.
        for c in CATEGORIES {
            assert_eq!(info(c.id), Some(c));
            for a in c.aliases {
                assert_eq!(info(a), Some(c), "{a}");
            }
        }
    }
}
