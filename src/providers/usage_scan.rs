//! Reading OpenAI's `usage` object as upstreams write it (compact: no whitespace, numbers,
//! `null`, the two `*_details` objects) by walking its bytes once. Every whole answer and the
//! last chunk of every stream carry one; serde's derived reader spent ~3.5k instructions on its
//! dozen members (each key checked as UTF-8 and matched, the details objects skipped member by
//! member), this ~0.5k. Anything else — whitespace, strings, floats, nesting deeper than the
//! details, a member twice — is left to serde ([`WireUsage::read`]), so the result is serde's.

use super::{CompletionDetails, PromptDetails, WireUsage};

/// What a compactly written usage object says; `None` if it is not written so (or is not a
/// usage object serde would accept member for member).
pub(super) fn compact(value: &[u8]) -> Option<WireUsage> {
    let mut reader = Reader { data: value, at: 0 };
    let mut usage = WireUsage {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: None,
        prompt_tokens_details: None,
        completion_tokens_details: None,
    };
    let mut seen = Seen::default();
    reader.byte(b'{')?;
    if reader.peek()? == b'}' {
        return Some(usage);
    }
    loop {
        match reader.member()? {
            Member::Prompt => {
                seen.once(0)?;
                usage.prompt_tokens = reader.number()?;
            }
            Member::Completion => {
                seen.once(1)?;
                usage.completion_tokens = reader.number()?;
            }
            Member::Total => {
                seen.once(2)?;
                usage.total_tokens = reader.number_or_null()?;
            }
            Member::PromptDetails => {
                seen.once(3)?;
                usage.prompt_tokens_details = reader
                    .details(Member::Cached)?
                    .map(|cached_tokens| PromptDetails { cached_tokens });
            }
            Member::CompletionDetails => {
                seen.once(4)?;
                usage.completion_tokens_details = reader
                    .details(Member::Reasoning)?
                    .map(|reasoning_tokens| CompletionDetails { reasoning_tokens });
            }
            // Members the gateway does not read: numbers, null, or a flat object of them.
            Member::Cached | Member::Reasoning | Member::Other => match reader.peek()? {
                b'{' => {
                    reader.details(Member::Other)?;
                }
                _ => {
                    reader.number_or_null()?;
                }
            },
        }
        match reader.next()? {
            b',' => continue,
            b'}' => return Some(usage),
            _ => return None,
        }
    }
}

/// The members met so far (serde refuses a member given twice).
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn once(&mut self, member: u8) -> Option<()> {
        let bit = 1 << member;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// `"name":`, the name without escapes: which member it names.
    fn member(&mut self) -> Option<Member> {
        let rest = &self.data[self.at..];
        // The names read, each compared whole with its quotes and colon (a comparison of
        // known length is a few instructions; finding the closing quote and then matching
        // the name cost ~100 a member).
        for (written, member) in [
            (&b"\"prompt_tokens\":"[..], Member::Prompt),
            (b"\"completion_tokens\":", Member::Completion),
            (b"\"total_tokens\":", Member::Total),
            (b"\"prompt_tokens_details\":", Member::PromptDetails),
            (b"\"completion_tokens_details\":", Member::CompletionDetails),
            (b"\"cached_tokens\":", Member::Cached),
            (b"\"reasoning_tokens\":", Member::Reasoning),
        ] {
            if rest.starts_with(written) {
                self.at += written.len();
                return Some(member);
            }
        }
        self.byte(b'"')?;
        let end = crate::swar::quote_or_backslash(self.data, self.at)?;
        self.at = end;
        self.byte(b'"')?;
        self.byte(b':')?;
        Some(Member::Other)
    }

    /// A non-negative integer that fits in `u64`.
    fn number(&mut self) -> Option<u64> {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.at += 1;
        }
        let digits = &self.data[start..self.at];
        // JSON allows no leading zero, and a fraction or exponent would make it a float.
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        match self.peek()? {
            b'.' | b'e' | b'E' => None,
            _ => Some(value),
        }
    }

    fn number_or_null(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        self.number().map(Some)
    }

    /// A details object (or `null`) of numbers and nulls, and the value of its member
    /// `wanted` if it has one (`Member::Other`: none is wanted, the object is only skipped);
    /// `None` if it is not written so.
    fn details(&mut self, wanted: Member) -> Option<Details> {
        if self.null() {
            return Some(Details::Null);
        }
        self.byte(b'{')?;
        let mut found: Option<Option<u64>> = None;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Details::Object(None));
        }
        loop {
            let member = self.member()?;
            let value = self.number_or_null()?;
            if member == wanted && wanted != Member::Other {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
            match self.next()? {
                b',' => continue,
                b'}' => return Some(Details::Object(found.flatten())),
                _ => return None,
            }
        }
    }

    fn null(&mut self) -> bool {
        let null = self.data[self.at..].starts_with(b"null");
        if null {
            self.at += 4;
        }
        null
    }
}

/// The members of a usage object (and of its details) that are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Prompt,
    Completion,
    Total,
    PromptDetails,
    CompletionDetails,
    Cached,
    Reasoning,
    Other,
}

enum Details {
    Null,
    /// The wanted member's value.
    Object(Option<u64>),
}

impl Details {
    fn map<T>(self, make: impl FnOnce(Option<u64>) -> T) -> Option<T> {
        match self {
            Details::Null => None,
            Details::Object(value) => Some(make(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prompt, completion, total, cached and reasoning tokens.
    type Fields = (u64, u64, Option<u64>, Option<u64>, Option<u64>);

    fn by_serde(text: &str) -> Option<Fields> {
        let usage: WireUsage = serde_json::from_str(text).ok()?;
        Some(fields(usage))
    }

    fn fields(u: WireUsage) -> Fields {
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens,
            u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        )
    }

    #[test]
    fn compact_usage_reads_as_serde_reads_it() {
        let shapes = [
            // OpenAI, with its details.
            r#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
            r#"{"prompt_tokens":1200,"completion_tokens":3,"total_tokens":1203,"prompt_tokens_details":{"cached_tokens":1024}}"#,
            // vLLM and Ollama.
            r#"{"prompt_tokens":7,"total_tokens":12,"completion_tokens":5,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":7,"completion_tokens":5}"#,
            r#"{"completion_tokens":5,"prompt_tokens":7,"total_tokens":null}"#,
            r#"{}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"completion_tokens_details":{}}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"completion_tokens_details":{"reasoning_tokens":null}}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"extra":{"a":1,"b":null},"more":7}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0}"#,
            // Names that start as the read ones do, and read ones where they are not read.
            r#"{"prompt_tokens_x":1,"prompt_tokens":3,"completion_tokens":4,"total":9,"cached_tokens":2,"reasoning_tokens_details":{"reasoning_tokens":5}}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens_x":1,"reasoning_tokens":6,"cached_tokens":2},"completion_tokens_details":{"reasoning":7,"cached_tokens":1,"reasoning_tokens":8}}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"prompt_tokens":1}}"#,
        ];
        for text in shapes {
            let walked = compact(text.as_bytes()).map(fields);
            assert!(walked.is_some(), "{text}");
            assert_eq!(walked, by_serde(text), "{text}");
            // What follows the object is not read.
            let followed = format!("{text},\"choices\":[]}}");
            assert_eq!(compact(followed.as_bytes()).map(fields), walked, "{text}");
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let others = [
            r#"{ "prompt_tokens": 3, "completion_tokens": 4 }"#,
            r#"{"prompt_tokens":3,"prompt_tokens":4}"#,
            r#"{"prompt_tokens":null,"completion_tokens":4}"#,
            r#"{"prompt_tokens":3.0,"completion_tokens":4}"#,
            r#"{"prompt_tokens":-3,"completion_tokens":4}"#,
            r#"{"prompt_tokens":03,"completion_tokens":4}"#,
            r#"{"prompt_tokens":1e3,"completion_tokens":4}"#,
            r#"{"prompt_tokens":18446744073709551616,"completion_tokens":4}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"model":"x"}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"x":{"y":{"z":1}}}"#,
            r#"{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
            r#"{"pro\u006dpt_tokens":3}"#,
            r#"{"prompt_tokens":3"#,
            r#"["prompt_tokens",3]"#,
            "null",
            "",
        ];
        for text in others {
            assert!(compact(text.as_bytes()).is_none(), "{text}");
            // Read through serde instead, with serde's answer.
            let mut de = serde_json::Deserializer::from_str(text);
            let serde = <Option<WireUsage> as serde::Deserialize>::deserialize(&mut de).ok();
            assert_eq!(
                WireUsage::read(text.as_bytes()).map(|u| u.map(fields)),
                serde.map(|u| u.map(fields)),
                "{text}"
            );
        }
    }
}
