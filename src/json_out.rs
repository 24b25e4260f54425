//! Compact JSON written fast where it is long: a string without a byte to escape (a prompt's
//! text, an answer's, most strings of a log line) is copied whole instead of looked at byte by
//! byte as serde_json does (~8 instructions a byte of a 400 KB prompt); everything else is
//! serde_json's, so the output is what serde_json writes.

use serde_json::Value;

/// `value` as a JSON string: copied when nothing in it needs escaping.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    if crate::swar::any_json_escaped(value.as_bytes()) {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    } else {
        // One capacity check for the three writes.
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

/// `value` as serde_json writes it compactly. The depth is a parsed document's (serde_json
/// stops at 128) or the gateway's own.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, value);
            }
            out.push(b'}');
        }
        // A number, a boolean or null into a Vec: cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// `value` as compact JSON bytes.
pub fn to_vec(value: &Value) -> Vec<u8> {
    // Room for a typical event up front: grown from empty, a ~200-byte event reallocated
    // four or five times.
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Random values of every kind, strings with and without bytes to escape at every
    /// place: written byte for byte as serde_json writes them.
    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        fn random(next: &mut dyn FnMut(usize) -> usize, depth: usize) -> Value {
            let pieces = [
                "a", "word ", "\"", "\\", "\n", "\u{1}", "\u{7f}", "é", "東", "🎉", "/",
            ];
            let text = |next: &mut dyn FnMut(usize) -> usize| -> String {
                (0..next(12)).map(|_| pieces[next(pieces.len())]).collect()
            };
            match next(if depth > 3 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(next(2) == 1),
                2 => json!(next(1000) as i64 - 500),
                3 => json!(next(1000) as f64 / 7.0),
                4 => Value::String(text(next)),
                5 => Value::Array((0..next(4)).map(|_| random(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next(4))
                        .map(|_| (text(next), random(next, depth + 1)))
                        .collect(),
                ),
            }
        }
        for _ in 0..500 {
            let value = random(&mut next, 0);
            assert_eq!(
                to_vec(&value),
                serde_json::to_vec(&value).unwrap(),
                "{value}"
            );
        }
    }
}
