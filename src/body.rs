//! A client's JSON request body, kept as the bytes it came in and the spans of its top-level
//! members. A proxy needs two or three fields of a body that may hold megabytes of messages:
//! members are parsed only when asked for, an edit replaces one member's bytes, and the
//! upstream gets the original bytes with only the edited members re-written. A full JSON tree
//! (about ten times the body for many small messages) is built only where a translation needs
//! one, and then as typed structs (see [`JsonBody::parse_as`]).
//!
//! Messages are read one at a time ([`for_each_message`]), borrowing from the bytes, so the
//! guard and the token estimate need memory for one message, not for the conversation.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::json_out::{write_str, write_value};

/// Cloned per failover attempt and for the token estimate: the bytes and the member list are
/// shared (an edit after a clone copies the list, never the bytes).
#[derive(Debug, Clone)]
pub struct JsonBody {
    bytes: Bytes,
    members: Arc<Vec<Member>>,
}

#[derive(Debug, Clone)]
struct Member {
    key: MemberKey,
    value: MemberValue,
}

/// A member's name: where it stands in the bytes when written without escapes (as nearly
/// every client writes its keys: no allocation), else decoded.
#[derive(Debug, Clone)]
enum MemberKey {
    /// A span of `bytes`, between the quotes.
    Original(Range<usize>),
    Decoded(Box<str>),
}

#[derive(Debug, Clone)]
enum MemberValue {
    /// As the client sent it: a span of `bytes`.
    Original(Range<usize>),
    /// Re-written by the gateway (raw JSON).
    Edited(Bytes),
    Removed,
}

/// Most bodies have a handful of top-level members (model, messages, stream, a few options).
const USUAL_MEMBERS: usize = 8;

impl JsonBody {
    /// A body the gateway built (a translation's canonical request): written member by
    /// member, each one's span noted as it is written (parsing the bytes again to find them
    /// cost a quarter of a long prompt's translation).
    pub fn from_value(value: &Value) -> Result<Self, crate::error::GatewayError> {
        let Value::Object(object) = value else {
            return Err(crate::error::GatewayError::Internal(
                "canonical request: not a JSON object".into(),
            ));
        };
        let mut bytes = Vec::new();
        let mut members = Vec::with_capacity(object.len());
        bytes.push(b'{');
        for (i, (key, value)) in object.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            let key_start = bytes.len();
            write_str(&mut bytes, key);
            // Written as is (no escapes): the span between the quotes names it.
            let key = if bytes.len() - key_start == key.len() + 2 {
                MemberKey::Original(key_start + 1..bytes.len() - 1)
            } else {
                MemberKey::Decoded(key.as_str().into())
            };
            bytes.push(b':');
            let value_start = bytes.len();
            write_value(&mut bytes, value);
            members.push(Member {
                key,
                value: MemberValue::Original(value_start..bytes.len()),
            });
        }
        bytes.push(b'}');
        Ok(Self {
            bytes: Bytes::from(bytes),
            members: Arc::new(members),
        })
    }

    /// Checks that `bytes` is one JSON object and notes where its members are.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        let base = bytes.as_ptr() as usize;
        let members = parse_whole(&bytes, MemberSpans { base })?;
        Ok(Self {
            members: Arc::new(members),
            bytes,
        })
    }

    /// The bytes as received (before any edit).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn is_named(&self, member: &Member, key: &str) -> bool {
        match &member.key {
            MemberKey::Original(span) => &self.bytes[span.clone()] == key.as_bytes(),
            MemberKey::Decoded(decoded) => &**decoded == key,
        }
    }

    fn member(&self, key: &str) -> Option<&Member> {
        // JSON parsers keep the last of repeated keys; so does this.
        self.members.iter().rev().find(|m| self.is_named(m, key))
    }

    /// The raw JSON of a member (`None` when absent or removed).
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        match &self.member(key)?.value {
            MemberValue::Original(span) => Some(&self.bytes[span.clone()]),
            MemberValue::Edited(bytes) => Some(bytes),
            MemberValue::Removed => None,
        }
    }

    /// A member as a `&str` of raw JSON (bodies are UTF-8: checked at parse).
    pub fn raw_str(&self, key: &str) -> Option<&str> {
        self.raw(key).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// A member parsed as `T`; `None` when absent (or `null`).
    pub fn get<'a, T: Deserialize<'a>>(
        &'a self,
        key: &str,
    ) -> Option<Result<T, serde_json::Error>> {
        let raw = self.raw(key)?;
        if raw == b"null" {
            return None;
        }
        Some(serde_json::from_slice(raw))
    }

    /// A string member (`None` when absent or `null`), borrowed from the body where it has no
    /// escapes: `get::<Cow<str>>` always copied it, as serde reads a `Cow` owned.
    pub fn get_str(&self, key: &str) -> Option<Result<Cow<'_, str>, serde_json::Error>> {
        let raw = self.raw(key)?;
        if raw == b"null" {
            return None;
        }
        // Nothing to unescape: the bytes between the quotes are the string.
        if let [b'"', inner @ .., b'"'] = raw
            && !crate::swar::any_json_escaped(inner)
            && let Ok(text) = std::str::from_utf8(inner)
        {
            return Some(Ok(Cow::Borrowed(text)));
        }
        Some(serde_json::from_slice::<Text>(raw).map(|text| text.0))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|r| r != b"null")
    }

    /// Sets a member (replacing it where it stands, or adding it at the end).
    pub fn set(&mut self, key: &str, value: &impl Serialize) {
        if let Ok(raw) = serde_json::to_vec(value) {
            self.set_raw(key, Bytes::from(raw));
        }
    }

    /// Sets a member to a string, unless it holds that string already (an upstream's model
    /// name is most often the one the client sent: the body then goes out as it came).
    pub fn set_str(&mut self, key: &str, value: &str) {
        if self.get_str(key).and_then(Result::ok).as_deref() != Some(value) {
            self.set(key, &value);
        }
    }

    /// Sets a member to raw JSON the caller vouches for.
    pub fn set_raw(&mut self, key: &str, raw: Bytes) {
        let at = self.members.iter().rposition(|m| self.is_named(m, key));
        let members = Arc::make_mut(&mut self.members);
        match at {
            Some(at) => members[at].value = MemberValue::Edited(raw),
            None => members.push(Member {
                key: MemberKey::Decoded(key.into()),
                value: MemberValue::Edited(raw),
            }),
        }
    }

    pub fn remove(&mut self, key: &str) {
        let named: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.is_named(&self.members[i], key))
            .collect();
        if named.is_empty() {
            return;
        }
        let members = Arc::make_mut(&mut self.members);
        for i in named {
            members[i].value = MemberValue::Removed;
        }
    }

    /// The body to send: the original bytes when nothing was edited.
    pub fn to_bytes(&self) -> Bytes {
        let edited = self
            .members
            .iter()
            .any(|m| !matches!(m.value, MemberValue::Original(_)));
        if !edited {
            return self.bytes.clone();
        }
        let mut out = BytesMut::with_capacity(self.bytes.len() + 64);
        out.extend_from_slice(b"{");
        let mut first = true;
        for m in self.members.iter() {
            let value: &[u8] = match &m.value {
                MemberValue::Original(span) => &self.bytes[span.clone()],
                MemberValue::Edited(bytes) => bytes,
                MemberValue::Removed => continue,
            };
            if !first {
                out.extend_from_slice(b",");
            }
            first = false;
            match &m.key {
                // Written without escapes by the client: valid as it stands.
                MemberKey::Original(span) => {
                    out.extend_from_slice(b"\"");
                    out.extend_from_slice(&self.bytes[span.clone()]);
                    out.extend_from_slice(b"\"");
                }
                // Written back escaped, as serde_json writes any string.
                MemberKey::Decoded(key) => {
                    let _ = serde_json::to_writer((&mut out).writer(), key);
                }
            }
            out.extend_from_slice(b":");
            out.extend_from_slice(value);
        }
        out.extend_from_slice(b"}");
        out.freeze()
    }

    /// The whole body as typed `T` (a translation's request type): compact structs, no tree.
    pub fn parse_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.to_bytes())
    }

    /// The whole body as a JSON tree, for the few paths that need one (payload logging, mock).
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        self.parse_as()
    }
}

/// Collects the top-level members' names and value spans of one JSON object.
struct MemberSpans {
    base: usize,
}

impl<'de> Visitor<'de> for MemberSpans {
    type Value = Vec<Member>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(USUAL_MEMBERS);
        while let Some(key) = map.next_key_seed(KeySpan { base: self.base })? {
            let value: &'de RawValue = map.next_value()?;
            let start = value.get().as_ptr() as usize - self.base;
            members.push(Member {
                key,
                value: MemberValue::Original(start..start + value.get().len()),
            });
        }
        Ok(members)
    }
}

impl<'de> DeserializeSeed<'de> for MemberSpans {
    type Value = Vec<Member>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Member>, D::Error> {
        d.deserialize_map(self)
    }
}

/// A member name: its span when the parser could borrow it from the bytes (no escapes).
struct KeySpan {
    base: usize,
}

impl<'de> DeserializeSeed<'de> for KeySpan {
    type Value = MemberKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MemberKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySpan {
    type Value = MemberKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<MemberKey, E> {
        let start = key.as_ptr() as usize - self.base;
        Ok(MemberKey::Original(start..start + key.len()))
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<MemberKey, E> {
        Ok(MemberKey::Decoded(key.into()))
    }
}

/// One chat message as the gateway reads it: its role, its content and its tool calls, raw.
#[derive(Debug, Deserialize)]
pub struct MessageView<'a> {
    #[serde(borrow, default)]
    pub role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tool_calls: Option<&'a RawValue>,
}

/// Calls `each` with every message of a raw `messages` array, one at a time.
pub fn for_each_message<'a>(
    messages: &'a [u8],
    each: impl FnMut(MessageView<'a>),
) -> Result<(), serde_json::Error> {
    parse_whole(messages, EachMessage { each })
}

/// `seed`'s value from all of `json`. Read as a `str` when it is UTF-8, checked once in one fast
/// pass: read as bytes, every string was checked as it was parsed and every raw member again
/// as a whole. Bytes that are not UTF-8 are read as bytes, so that the parser says where.
fn parse_whole<'a, S: DeserializeSeed<'a>>(
    json: &'a [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    fn run<'a, R: serde_json::de::Read<'a>, S: DeserializeSeed<'a>>(
        mut deserializer: serde_json::Deserializer<R>,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        let value = seed.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
    match std::str::from_utf8(json) {
        Ok(text) => run(serde_json::Deserializer::from_str(text), seed),
        Err(_) => run(serde_json::Deserializer::from_slice(json), seed),
    }
}

struct EachMessage<F> {
    each: F,
}

impl<'de, F: FnMut(MessageView<'de>)> Visitor<'de> for EachMessage<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(message) = seq.next_element::<MessageView<'de>>()? {
            (self.each)(message);
        }
        Ok(())
    }
}

impl<'de, F: FnMut(MessageView<'de>)> DeserializeSeed<'de> for EachMessage<F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// What a message's content holds: its text parts (borrowed where the JSON has no escapes)
/// and how many images.
#[derive(Debug, Default)]
pub struct ContentText<'a> {
    pub texts: Vec<Cow<'a, str>>,
    pub images: u64,
}

#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// The text of a message's content: a string, or the text parts of an array.
pub fn content_text(content: Option<&RawValue>) -> ContentText<'_> {
    let mut out = ContentText::default();
    out.images = for_each_text(content, |text| out.texts.push(text));
    out
}

/// Calls `each` with every text of a message's content (a string, or the text parts of an
/// array), without collecting them; returns how many images it holds.
pub fn for_each_text<'a>(content: Option<&'a RawValue>, mut each: impl FnMut(Cow<'a, str>)) -> u64 {
    let Some(raw) = content else {
        return 0;
    };
    let json = raw.get();
    match json.as_bytes().first() {
        Some(b'"') => {
            // Valid JSON (checked when the message was read): without a backslash, the text
            // is what stands between the quotes, and needs no second parse.
            let inner = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'));
            if let Some(inner) = inner.filter(|i| memchr::memchr(b'\\', i.as_bytes()).is_none()) {
                each(Cow::Borrowed(inner));
            } else if let Ok(text) = serde_json::from_str::<Text>(json) {
                each(text.0);
            }
            0
        }
        Some(b'[') => {
            let parts: Vec<PartView> = serde_json::from_str(json).unwrap_or_default();
            let mut images = 0;
            for part in parts {
                match part.kind.as_deref() {
                    Some("text") => part.text.into_iter().for_each(&mut each),
                    Some("image_url") => images += 1,
                    _ => {}
                }
            }
            images
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are not UTF-8 are refused wherever they stand (a member's name or value, a
    /// message), as the byte parser refused them; UTF-8 is read as it was.
    #[test]
    fn a_body_that_is_not_utf8_is_refused_and_one_that_is_reads_the_same() {
        for bad in [
            &b"{\"model\":\"m\xff\"}"[..],
            b"{\"m\xc3\":1}",
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xe9t\xe9\"}]}",
            b"{\"a\":{\"b\":[\"\xf0\x9f\"]}}",
        ] {
            assert!(JsonBody::parse(Bytes::copy_from_slice(bad)).is_err());
        }
        let messages = b"[{\"role\":\"user\",\"content\":\"\xff\"}]";
        assert!(for_each_message(messages, |_| ()).is_err());
        let good = JsonBody::parse(Bytes::from_static(
            r#"{"model":"é😀","messages":[{"role":"user","content":"naïve \u00e9"}]}"#.as_bytes(),
        ))
        .unwrap();
        assert_eq!(good.get_str("model").unwrap().unwrap(), "é😀");
        let mut roles = Vec::new();
        for_each_message(good.raw("messages").unwrap(), |m| {
            roles.push(m.role.unwrap().into_owned())
        })
        .unwrap();
        assert_eq!(roles, ["user"]);
    }

    #[test]
    fn string_members_are_read_as_serde_reads_them() {
        let body = JsonBody::parse(Bytes::from_static(
            r#"{"plain":"gpt-4o","escaped":"a\"b\u0041","wide":"\u00e9 é","null":null,"number":7,"object":{"a":"b"},"control":"a\tb"}"#.as_bytes(),
        ))
        .unwrap();
        for key in [
            "plain", "escaped", "wide", "null", "number", "object", "control", "absent",
        ] {
            let fast = body.get_str(key).map(|r| r.map(|t| t.into_owned()).ok());
            let serde = body.get::<String>(key).map(Result::ok);
            assert_eq!(fast, serde, "{key}");
        }
        assert!(matches!(
            body.get_str("plain"),
            Some(Ok(Cow::Borrowed("gpt-4o")))
        ));
        assert!(matches!(body.get_str("escaped"), Some(Ok(Cow::Owned(_)))));
    }
    use serde_json::json;

    fn body(v: Value) -> JsonBody {
        JsonBody::parse(Bytes::from(v.to_string())).unwrap()
    }

    #[test]
    fn unedited_bodies_go_out_as_they_came() {
        let text =
            r#"{"model": "m",  "messages": [{"role":"user","content":"hi"}], "x": {"y": 1}}"#;
        let b = JsonBody::parse(Bytes::from(text)).unwrap();
        assert_eq!(b.to_bytes(), text);
        assert_eq!(b.get::<String>("model").unwrap().unwrap(), "m");
        assert!(matches!(b.get_str("model"), Some(Ok(Cow::Borrowed("m")))));
        assert_eq!(b.raw("x").unwrap(), br#"{"y": 1}"#);
    }

    #[test]
    fn a_built_body_is_the_body_its_bytes_parse_to() {
        let value = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "line\none \"quoted\" é 🎉"}],
            "a\"b": {"nested": [1, 2.5, null, true]},
            "ctrl\u{1}": "x",
            "stream": true,
        });
        let mut built = JsonBody::from_value(&value).unwrap();
        let written = serde_json::to_vec(&value).unwrap();
        assert_eq!(
            built.to_bytes(),
            written,
            "byte for byte what serde_json writes"
        );
        let parsed = JsonBody::parse(Bytes::from(written)).unwrap();
        for key in ["model", "messages", "a\"b", "ctrl\u{1}", "stream"] {
            assert_eq!(built.raw(key), parsed.raw(key), "{key}");
        }
        built.set("model", &"upstream");
        built.remove("stream");
        let out: Value = serde_json::from_slice(&built.to_bytes()).unwrap();
        assert_eq!(out["model"], "upstream");
        assert_eq!(out.get("stream"), None);
        assert_eq!(out["a\"b"], value["a\"b"]);
        assert!(
            JsonBody::from_value(&json!([1])).is_err(),
            "only an object is a body"
        );
        assert_eq!(JsonBody::from_value(&json!({})).unwrap().to_bytes(), "{}");
    }

    #[test]
    fn edits_rewrite_only_their_member() {
        let mut b = body(
            json!({"model": "a", "stream_options": {"x": 1}, "temperature": 0.5, "weird\"key": 1}),
        );
        b.set("model", &"upstream");
        b.remove("stream_options");
        b.set("stream_options", &json!({"include_usage": true}));
        let out: Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        assert_eq!(
            out,
            json!({"model": "upstream", "temperature": 0.5, "weird\"key": 1, "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn escaped_names_are_found_decoded_and_written_back_escaped() {
        let text = r#"{"mod\u0065l": "m", "a\"b": 1, "messages": []}"#;
        let mut b = JsonBody::parse(Bytes::from(text)).unwrap();
        assert_eq!(b.get::<String>("model").unwrap().unwrap(), "m");
        assert_eq!(b.raw("a\"b").unwrap(), b"1");
        b.set("messages", &json!([{"role": "user"}]));
        let out: Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "a\"b": 1, "messages": [{"role": "user"}]})
        );
    }

    #[test]
    fn a_clone_edited_leaves_the_original_as_it_was() {
        let original = body(json!({"model": "a", "stream": true}));
        let mut attempt = original.clone();
        attempt.set("model", &"b");
        attempt.remove("stream");
        assert_eq!(original.to_bytes(), r#"{"model":"a","stream":true}"#);
        assert_eq!(attempt.to_bytes(), r#"{"model":"b"}"#);
    }

    #[test]
    fn setting_the_string_a_member_holds_leaves_the_body_unedited() {
        let text = r#"{"model":  "m", "x": 1}"#;
        let mut b = JsonBody::parse(Bytes::from(text)).unwrap();
        b.set_str("model", "m");
        assert_eq!(b.to_bytes(), text);
        b.set_str("model", "upstream");
        assert_eq!(b.to_bytes(), r#"{"model":"upstream","x":1}"#);
    }

    #[test]
    fn only_objects_are_bodies() {
        for bad in ["[1]", "\"x\"", "{\"a\":", "{} {}", "{\"a\": tru}"] {
            assert!(JsonBody::parse(Bytes::from(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_are_visited_one_by_one() {
        let b = body(json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a \"quoted\" word"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
        ]}));
        let mut seen = Vec::new();
        for_each_message(b.raw("messages").unwrap(), |m| {
            let c = content_text(m.content);
            seen.push((
                m.role.unwrap_or_default().into_owned(),
                c.texts.concat(),
                c.images,
                m.tool_calls.is_some(),
            ));
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("system".into(), "be brief".into(), 0, false),
                ("user".into(), "a \"quoted\" word".into(), 1, false),
                ("assistant".into(), String::new(), 0, true),
            ]
        );
    }
}
