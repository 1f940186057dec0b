//! Text from the outside (names from DNS, SNI and Host headers, process names, command
//! lines) made safe to show: every text sink (the audit's table and live lines, `history`,
//! `report`, logs, the journal's MESSAGE, notifications, the HTML page) passes it through
//! [`safe`], and every CSV cell through [`csv_cell`]. Anyone who can make a watched app ask
//! for a name chooses these bytes: they must not move an administrator's cursor, retitle
//! their terminal, hide text, or reorder what they read.

use std::borrow::Cow;

/// Whether `c` would act on a terminal or a reader instead of being read: C0 and C1
/// controls (ESC, CSI U+009B, DEL), bidirectional overrides and isolates (U+202A-U+202E,
/// U+2066-U+2069, marks), zero-width and invisible characters, line and paragraph
/// separators, and the byte order mark.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `s` with every character [`is_unsafe`] finds written out as `\u{XXXX}`, so that it
/// shows what was sent and does nothing else. Borrowed when there is nothing to escape.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A CSV cell that a spreadsheet will not run: a cell that starts with `=`, `+`, `-` or `@`
/// (a formula) gets a leading `'`, as OWASP advises; the text is made [`safe`] first, so
/// a leading tab or carriage return is written out and cannot start one either.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let s = safe(s);
    match s.chars().next() {
        Some('=' | '+' | '-' | '@') => Cow::Owned(format!("'{s}")),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_terminal_controls_c1_bidi_and_zero_width_characters() {
        assert!(matches!(safe("graph.facebook.com"), Cow::Borrowed(_)));
        assert_eq!(safe("a\u{1b}[2Jb"), "a\\u{001B}[2Jb");
        assert_eq!(safe("\u{1b}]0;owned\u{7}x"), "\\u{001B}]0;owned\\u{0007}x");
        assert_eq!(safe("x\u{9b}31m"), "x\\u{009B}31m");
        assert_eq!(safe("moc.\u{202E}evil"), "moc.\\u{202E}evil");
        assert_eq!(safe("a\u{200B}b\u{feff}"), "a\\u{200B}b\\u{FEFF}");
        assert_eq!(safe("line\nbreak\r"), "line\\u{000A}break\\u{000D}");
        // Ordinary letters of any script are kept.
        assert_eq!(safe("bücher.例え.テスト"), "bücher.例え.テスト");
    }

    #[test]
    fn display_csv_cells_that_would_be_formulas_are_neutralised() {
        assert_eq!(csv_cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        for lead in ["+1", "-2", "@SUM(A1)"] {
            assert!(csv_cell(lead).starts_with('\''), "{lead:?}");
        }
        // A leading tab or carriage return is written out, so no cell starts with one.
        for lead in ["\tx", "\rx"] {
            assert!(!csv_cell(lead).starts_with(['\t', '\r']), "{lead:?}");
        }
        assert_eq!(csv_cell("graph.facebook.com"), "graph.facebook.com");
        assert_eq!(csv_cell(""), "");
        // A negative number written by brokerwatch itself never occurs; names are text.
        assert_eq!(csv_cell("a=b"), "a=b");
    }
}
