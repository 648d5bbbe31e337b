//! Input hygiene for what other people see or what names things: device ids, group
//! names, file names. These may not carry control characters (a newline in a device
//! id breaks logs and lists) or bidirectional overrides (which make "gpj.exe" look
//! like "exe.jpg" and a group name look like another).

use crate::error::ApiError;

/// Whether `c` may appear in a name or id shown to people.
fn allowed(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            // Embeddings and overrides (LRE, RLE, PDF, LRO, RLO) and isolates
            // (LRI, RLI, FSI, PDI).
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Checks an identifier chosen by a client (device id and the like): 1 to `max`
/// bytes, no control or bidi-override characters.
pub fn check_id(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {max} bytes"
        )));
    }
    check_chars(what, value)
}

/// Checks a display name (group name, file name): 1 to `max` bytes, not blank, no
/// control or bidi-override characters.
pub fn check_name(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {max} bytes and not blank"
        )));
    }
    check_chars(what, value)
}

/// Checks only the characters (for optional fields that may be empty).
pub fn check_chars(what: &str, value: &str) -> Result<(), ApiError> {
    // The common case, printable ASCII, without decoding characters.
    let printable_ascii = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if printable_ascii || value.chars().all(allowed) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} may not contain control or bidirectional-override characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_controls_and_overrides_but_not_scripts() {
        for good in ["phone-1", "Ünïcödé", "שלום", "العربية", "日本語", "a b"] {
            check_name("name", good, 64).unwrap();
        }
        for bad in [
            "a\nb",
            "a\u{0}b",
            "tab\t",
            "\u{1b}[31mred",
            "gpj\u{202E}.exe",
            "x\u{2066}y",
            "\u{85}",
        ] {
            assert!(check_name("name", bad, 64).is_err(), "{bad:?}");
            assert!(check_id("id", bad, 64).is_err(), "{bad:?}");
        }
        assert!(check_name("name", "   ", 64).is_err());
        assert!(check_id("id", "", 64).is_err());
        assert!(check_id("id", &"x".repeat(65), 64).is_err());
    }
}
