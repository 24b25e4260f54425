//! Looking at eight bytes at a time for the few bytes JSON strings care about (quotes,
//! backslashes, control characters): the scans of stream chunks' strings and usage objects,
//! and the log's check for strings that need escaping. These are a few hundred bytes of short
//! strings: a byte loop cost ten instructions a byte, SIMD searches' set-up more than the
//! search.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `x` equal to `b`. Bytes above a flagged one may be flagged wrongly,
/// so only the lowest flag counts.
fn equal(x: u64, b: u8) -> u64 {
    let v = x ^ (ONES * u64::from(b));
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The first `"` or backslash at or after `from`.
#[inline]
pub(crate) fn quote_or_backslash(data: &[u8], from: usize) -> Option<usize> {
    find(
        data,
        from,
        |x| equal(x, b'"') | equal(x, b'\\'),
        |b| b == b'"' || b == b'\\',
    )
}

/// Whether `data` holds a byte JSON writes escaped: a control character, `"` or `\\`.
pub(crate) fn any_json_escaped(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    for chunk in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let x = u64::from_le_bytes(bytes);
        if equal(x, b'"') | equal(x, b'\\') | below_space(x) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < b' ' || b == b'"' || b == b'\\')
}

/// Flags the bytes of `x` below the space (control characters), as [`equal`].
fn below_space(x: u64) -> u64 {
    x.wrapping_sub(ONES * 0x20) & !x & HIGHS
}

#[inline(always)]
fn find(
    data: &[u8],
    from: usize,
    word: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
) -> Option<usize> {
    let rest = data.get(from..)?;
    let mut words = rest.chunks_exact(8);
    let mut at = from;
    for chunk in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let flagged = word(u64::from_le_bytes(bytes));
        if flagged != 0 {
            return Some(at + (flagged.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| byte(b)).map(|p| at + p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_every_byte_json_escapes_at_every_offset() {
        for len in 0..20 {
            for at in 0..len {
                for b in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert!(super::any_json_escaped(&text), "{b:#x} at {at} of {len}");
                }
                let mut text = vec![b'a'; len];
                text[at] = 0x7f;
                assert!(!super::any_json_escaped(&text));
            }
        }
    }

    #[test]
    fn finds_the_first_stop_at_every_offset() {
        let text = br#"{"a":"b\"c d","e":1}"#;
        for from in 0..=text.len() {
            let naive = |stop: &dyn Fn(u8) -> bool| {
                text[from..].iter().position(|&b| stop(b)).map(|p| from + p)
            };
            assert_eq!(
                super::quote_or_backslash(text, from),
                naive(&|b| b == b'"' || b == b'\\')
            );
        }
        // Bytes above 0x7f (UTF-8) are never stops.
        assert!(!super::any_json_escaped("ééééé ~ plain text".as_bytes()));
        assert_eq!(super::quote_or_backslash("ééééé\"".as_bytes(), 0), Some(10));
    }
}
