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
        let mut text = String::with_capacity(second.1.len() + 5);
        text.push_str(&second.1);
        text.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            text.push(char::from(b'0' + digit as u8));
        }
        text.push('Z');
        text
    })
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
