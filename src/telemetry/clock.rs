//! Wall-clock timestamps for request records, written often: RFC 3339 in UTC with
//! milliseconds. The text up to the second is kept per thread and reused for every request of
//! that second; only the milliseconds are written anew.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last written on this thread and its text (`2026-12-04T18:45:12`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// [`rfc3339_millis`] of a time kept as Unix milliseconds (the store's times).
pub fn rfc3339_of_unix_ms(ms: i64) -> String {
    rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// `2026-12-04T18:45:12.123Z`, as `humantime::format_rfc3339_millis` writes it.
pub fn rfc3339_millis(at: SystemTime) -> String {
    with_rfc3339_millis(at, str::to_owned)
}

/// Calls `f` with [`rfc3339_millis`] of `at`, written in a buffer on the stack.
pub fn with_rfc3339_millis<R>(at: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let whole = humantime::format_rfc3339_seconds(
                UNIX_EPOCH + std::time::Duration::from_secs(secs),
            )
            .to_string();
            // `...:12Z` without its zone: the milliseconds and the zone follow.
            *second = (secs, whole.trim_end_matches('Z').to_owned());
        }
        // Up to the second: 19 bytes for any year humantime writes (up to 9999).
        let mut text = [0u8; 32];
        let whole = second.1.as_bytes();
        let n = whole.len().min(text.len() - 5);
        text[..n].copy_from_slice(&whole[..n]);
        text[n] = b'.';
        for (i, digit) in [millis / 100, millis / 10 % 10, millis % 10]
            .into_iter()
            .enumerate()
        {
            text[n + 1 + i] = b'0' + digit as u8;
        }
        text[n + 4] = b'Z';
        // ASCII throughout: the text is always valid.
        f(std::str::from_utf8(&text[..n + 5]).unwrap_or_default())
    })
}

/// When a request arrived, as its record keeps it: written as [`rfc3339_millis`] by whoever
/// writes the record out (the log sinks' writer thread), not on the request's own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTime(pub SystemTime);

impl Default for LogTime {
    fn default() -> Self {
        Self(UNIX_EPOCH)
    }
}

impl LogTime {
    /// Unix milliseconds (0 before 1970).
    pub fn unix_ms(&self) -> i64 {
        self.0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

impl serde::Serialize for LogTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_rfc3339_millis(self.0, |text| serializer.serialize_str(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_what_humantime_writes() {
        for offset_ms in [
            0u64,
            7,
            999,
            1_000,
            1_234_567_891,
            1_764_873_912_045,
            1_764_873_912_999,
        ] {
            let at = UNIX_EPOCH + Duration::from_millis(offset_ms);
            assert_eq!(
                rfc3339_millis(at),
                humantime::format_rfc3339_millis(at).to_string(),
                "{offset_ms}"
            );
        }
    }
}
