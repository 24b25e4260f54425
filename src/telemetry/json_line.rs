//! A writer for flat JSON objects whose keys are fixed at compile time: the request log's line.
//!
//! serde_json escapes every key of every record byte by byte; a record has ~40 keys, which made
//! the log line the largest cost of a request after hyper's own. Here a key is a literal made at
//! compile time with its separator and quotes (`,"name":`, see [`key!`]) and written in one
//! copy, and a value is copied as is unless it holds a byte JSON must escape (then
//! serde_json writes it). Integers are written by `itoa` and floats by serde_json (which
//! writes the shortest exact form, and `null` for NaN), so the output is what serde would have
//! written.

use serde::Serialize;

use crate::json_out::write_str;

/// A key as it is written after another member: `,"name":` (the first member leaves out the
/// comma). Made by [`key!`], which checks at compile time that the name needs no escaping.
#[derive(Debug, Clone, Copy)]
pub struct Key(&'static str);

impl Key {
    pub const fn new(written: &'static str) -> Self {
        let bytes = written.as_bytes();
        assert!(bytes.len() >= 4 && bytes[0] == b',' && bytes[1] == b'"');
        let mut i = 2;
        while i < bytes.len() - 2 {
            let b = bytes[i];
            assert!(
                b >= b' ' && b != b'"' && b != b'\\',
                "a JSON key that needs escaping"
            );
            i += 1;
        }
        Self(written)
    }
}

/// A [`Key`] for the literal `name`, made at compile time: `key!("status")`.
macro_rules! key {
    ($name:literal) => {
        const { $crate::telemetry::json_line::Key::new(concat!(",\"", $name, "\":")) }
    };
}
pub(crate) use key;

/// An object being written into `out`; [`JsonObject::end`] closes it.
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: Key) {
        let written = key.0.as_bytes();
        let written = match std::mem::replace(&mut self.first, false) {
            true => &written[1..],
            false => written,
        };
        self.out.extend_from_slice(written);
    }

    pub fn str(&mut self, key: Key, value: &str) -> &mut Self {
        self.key(key);
        write_str(self.out, value);
        self
    }

    pub fn opt_str(&mut self, key: Key, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub fn u64(&mut self, key: Key, value: u64) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn opt_u64(&mut self, key: Key, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    pub fn bool(&mut self, key: Key, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn f64(&mut self, key: Key, value: f64) -> &mut Self {
        self.value(key, &value)
    }

    pub fn opt_f64(&mut self, key: Key, value: Option<f64>) -> &mut Self {
        self.value(key, &value)
    }

    /// An object under `key`, its members written by `members`.
    pub fn object(&mut self, key: Key, members: impl FnOnce(&mut JsonObject<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = JsonObject::begin(self.out);
        members(&mut inner);
        inner.end();
        self
    }

    pub fn null(&mut self, key: Key) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(b"null");
        self
    }

    /// Any serialisable value, written by serde_json (nested objects, floats).
    pub fn value<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) -> &mut Self {
        self.key(key);
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            // Only a map with non-string keys or a failing Serialize impl get here; the
            // field stays well-formed.
            self.out.extend_from_slice(b"null");
        }
        self
    }

    /// An array under `key` with one element per item, each written by `each`.
    pub fn array<T>(
        &mut self,
        key: Key,
        items: &[T],
        mut each: impl FnMut(&mut Vec<u8>, &T),
    ) -> &mut Self {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            each(self.out, item);
        }
        self.out.push(b']');
        self
    }

    pub fn end(&mut self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_json_writes() {
        let mut out = Vec::new();
        let mut o = JsonObject::begin(&mut out);
        o.str(key!("plain"), "gpt-4o")
            .str(key!("quoted"), "say \"hi\"\n\\ \u{1} é \u{7f}")
            .opt_str(key!("none"), None)
            .u64(key!("n"), 18_446_744_073_709_551_615)
            .opt_u64(key!("m"), Some(7))
            .bool(key!("yes"), true)
            .f64(key!("ms"), 0.1 + 0.2)
            .opt_f64(key!("nan"), Some(f64::NAN))
            .array(key!("list"), &["a", "b\"c"], |out, s| write_str(out, s))
            .value(key!("nested"), &serde_json::json!({"x": 1}));
        o.end();
        let expected = serde_json::json!({
            "plain": "gpt-4o",
            "quoted": "say \"hi\"\n\\ \u{1} é \u{7f}",
            "none": null,
            "n": 18_446_744_073_709_551_615u64,
            "m": 7,
            "yes": true,
            "ms": 0.1 + 0.2,
            "nan": null,
            "list": ["a", "b\"c"],
            "nested": {"x": 1},
        });
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            expected
        );
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }
}
