//! A request member that is either a string or a list (Messages' `content` and `system`,
//! Responses' `input`), read by what the parser meets. serde's untagged enums buffer the whole
//! value to try each variant in turn, and the string variant then copies it out of the buffer:
//! for an agent's context, hundreds of kilobytes copied for nothing.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

#[derive(Debug)]
pub enum TextOrList<T> {
    Text(String),
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOrList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Either(PhantomData))
    }
}

struct Either<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Either<T> {
    type Value = TextOrList<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(TextOrList::Text(text.to_owned()))
    }

    /// An owned string (from a parsed `Value`) is taken, not copied.
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(TextOrList::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<Self::Value, A::Error> {
        Vec::deserialize(de::value::SeqAccessDeserializer::new(items)).map(TextOrList::List)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    type Content = TextOrList<Map<String, Value>>;

    #[test]
    fn a_string_or_a_list_and_nothing_else() {
        let text: Content = serde_json::from_str(r#""hi \"there\"""#).unwrap();
        assert!(matches!(text, TextOrList::Text(t) if t == "hi \"there\""));
        let owned: Content = serde_json::from_value(json!("owned")).unwrap();
        assert!(matches!(owned, TextOrList::Text(t) if t == "owned"));
        let list: Content = serde_json::from_str(r#"[{"type": "text", "text": "a"}]"#).unwrap();
        assert!(matches!(list, TextOrList::List(l) if l.len() == 1 && l[0]["text"] == "a"));
        let error = serde_json::from_str::<Content>("42")
            .unwrap_err()
            .to_string();
        assert!(error.contains("expected a string or a list"), "{error}");
        assert!(
            serde_json::from_str::<Content>("[1]").is_err(),
            "items of the wrong kind"
        );
    }
}
