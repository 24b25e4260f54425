//! Estimating prompt tokens before a request is sent, to reserve its cost. One pass over the
//! text, no tables, no allocation: the cost is linear in the prompt whatever it holds (a real
//! BPE tokenizer is quadratic on long runs without spaces, and holds ~50 MB of tables). The
//! estimate follows OpenAI's `o200k_base` within a few tens of percent on prose, code and
//! JSON, leaning high; the reservation is reconciled with the upstream's own count afterwards.

use crate::body::{JsonBody, for_each_message, for_each_text};

/// What an image part is reckoned at (OpenAI's price of a 1024×1024 image in high detail).
const IMAGE_TOKENS: u64 = 765;
/// Per message (role and separators), as OpenAI's counting recipe has it.
const PER_MESSAGE: u64 = 3;
/// The priming of the assistant's reply.
const PER_REPLY: u64 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Newline,
    Punct,
    /// A character of three or four UTF-8 bytes (CJK, emoji, symbols).
    Wide,
}

/// The class of every ASCII byte, looked up instead of matched.
const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Punct; 128];
    let mut b = 0;
    while b < 128 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
            b'0'..=b'9' => Class::Digit,
            b' ' | b'\t' => Class::Space,
            b'\n' | b'\r' => Class::Newline,
            _ => Class::Punct,
        };
        b += 1;
    }
    table
};

/// The class and UTF-8 width of the character starting at `bytes[i]` (a character boundary
/// of valid UTF-8): ASCII by table, others by their lead byte. Two-byte characters (accented
/// Latin, Greek, Cyrillic, ...) are letters; wider ones are `Wide`.
#[inline]
fn class_at(bytes: &[u8], i: usize) -> (Class, usize) {
    match bytes[i] {
        b @ 0..0x80 => (ASCII_CLASS[b as usize], 1),
        0x80..0xE0 => (Class::Letter, 2),
        0xE0..0xF0 => (Class::Wide, 3),
        _ => (Class::Wide, 4),
    }
}

/// Whether the letter at `bytes[i]` (`width` bytes) is lower and upper case.
#[inline]
fn letter_case(bytes: &[u8], i: usize, width: usize) -> (bool, bool) {
    if width == 1 {
        let b = bytes[i];
        return (b.is_ascii_lowercase(), b.is_ascii_uppercase());
    }
    let code = (u32::from(bytes[i] & 0x1F) << 6) | u32::from(bytes[i + 1] & 0x3F);
    char::from_u32(code).map_or((false, false), |c| (c.is_lowercase(), c.is_uppercase()))
}

/// The estimated tokens of `text`: the tokens of its runs of one class of character (a word
/// is one token, plus one a camelCase split and one every six letters past the first; digits
/// one a three; a lone space none, longer spaces one an eight; newlines and punctuation one a
/// two; a wide character one), counted as the runs grow, one step of a small state machine a
/// byte (this runs over every prompt a limit policy reserves for, 400 KB for an agent's
/// context). ASCII steps by table; other characters by their class and case.
pub fn count(text: &str) -> u64 {
    let bytes = text.as_bytes();
    match split_point(bytes) {
        // Each step waits for the table load of the one before, so one pass over a long text
        // is bound by that latency, not by its instructions: two halves counted side by side
        // overlap (the instruction count stays the same).
        Some(at) => {
            let (first, second) = bytes.split_at(at + 1);
            let (mut a, mut b) = (Counter::new(Run::None), Counter::new(Run::Space));
            while a.ascii_block(first) && b.ascii_block(second) {}
            a.finish(first) + b.finish(second)
        }
        None => Counter::new(Run::None).finish(bytes),
    }
}

/// Texts shorter than this are counted in one pass.
const SPLIT_FROM: usize = 512;
/// How far past the middle a split point is looked for.
const SPLIT_SEARCH: usize = 4096;

/// A space right after an ASCII character that is not one, near the middle of a long text:
/// whatever came before, the state after it is [`Run::Space`] and it adds no token (see
/// [`next_step`]), so the text after it is counted on its own from that state.
fn split_point(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < SPLIT_FROM {
        return None;
    }
    let middle = bytes.len() / 2;
    let end = (middle + SPLIT_SEARCH).min(bytes.len());
    (middle..end).find(|&at| {
        let before = bytes[at - 1];
        bytes[at] == b' ' && before < 0x80 && ASCII_CLASS[usize::from(before)] != Class::Space
    })
}

/// One pass of the state machine over a text: where it is, its state, the tokens so far.
struct Counter {
    at: usize,
    state: u8,
    tokens: u64,
}

impl Counter {
    fn new(start: Run) -> Self {
        Self {
            at: 0,
            state: start.code(),
            tokens: 0,
        }
    }

    /// The next eight bytes if they are all ASCII (most prompts are mostly ASCII): the table
    /// alone, with no per-byte bound or class check. False, with nothing done, otherwise.
    #[inline(always)]
    fn ascii_block(&mut self, bytes: &[u8]) -> bool {
        let Some(block) = bytes.get(self.at..self.at + 8) else {
            return false;
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        if u64::from_le_bytes(word) & 0x8080_8080_8080_8080 != 0 {
            return false;
        }
        let mut state = self.state;
        for b in word {
            let step = ASCII_STEPS[usize::from(state & STATE_MASK)][usize::from(b & 0x7F)];
            self.tokens += u64::from(step >> STATE_BITS);
            state = step;
        }
        self.state = state & STATE_MASK;
        self.at += 8;
        true
    }

    /// Counts the rest of `bytes`: the tokens of the whole pass.
    fn finish(mut self, bytes: &[u8]) -> u64 {
        loop {
            while self.ascii_block(bytes) {}
            let Some(&b) = bytes.get(self.at) else {
                return self.tokens;
            };
            let step = if b < 0x80 {
                self.at += 1;
                // Masked: the index is in the table's bounds without a check.
                ASCII_STEPS[usize::from(self.state & STATE_MASK)][usize::from(b & 0x7F)]
            } else {
                let (class, width) = class_at(bytes, self.at);
                let (lower, upper) = match class {
                    Class::Letter => letter_case(bytes, self.at, width),
                    _ => (false, false),
                };
                self.at += width;
                next_step(self.state, class, lower, upper)
            };
            self.tokens += u64::from(step >> STATE_BITS);
            self.state = step & STATE_MASK;
        }
    }
}

/// Where the state machine of [`count`] stands: in which run, and how far along (the
/// positions at which a run's token count grows repeat with these periods).
#[derive(Clone, Copy)]
enum Run {
    /// At the start, or after a wide character (which is a token of its own).
    None,
    /// `(length - 1) % 6`, and whether the last letter was lower case (camelCase splits).
    Letter(u8, bool),
    /// `(length - 1) % 3`.
    Digit(u8),
    /// One space: it joins the next word.
    Space,
    /// Two or more: `length % 8`.
    Spaces(u8),
    /// `(length - 1) % 2`.
    Newline(u8),
    /// `(length - 1) % 2`.
    Punct(u8),
}

const STATE_BITS: u32 = 5;
const STATE_MASK: u8 = (1 << STATE_BITS) - 1;
/// 29 states used; the table has a row for every value of [`STATE_MASK`].
const STATES: usize = 1 << STATE_BITS;

impl Run {
    const fn code(self) -> u8 {
        match self {
            Run::None => 0,
            Run::Letter(k, lower) => 1 + k * 2 + lower as u8,
            Run::Digit(k) => 13 + k,
            Run::Space => 16,
            Run::Spaces(m) => 17 + m,
            Run::Newline(k) => 25 + k,
            Run::Punct(k) => 27 + k,
        }
    }

    const fn of(code: u8) -> Run {
        match code {
            1..=12 => Run::Letter((code - 1) / 2, (code - 1) % 2 == 1),
            13..=15 => Run::Digit(code - 13),
            16 => Run::Space,
            17..=24 => Run::Spaces(code - 17),
            25..=26 => Run::Newline(code - 25),
            27..=28 => Run::Punct(code - 27),
            _ => Run::None,
        }
    }
}

/// The step from `state` over a character of `class`: the next state's code, with the tokens
/// it adds above [`STATE_BITS`]. Over a run, the steps add up to the run's tokens as
/// [`count`] defines them (the tests hold the two readings together).
const fn next_step(state: u8, class: Class, lower: bool, upper: bool) -> u8 {
    let (next, tokens) = match (Run::of(state), class) {
        (Run::Letter(k, prev_lower), Class::Letter) => {
            let k = (k + 1) % 6;
            let tokens = (k == 0) as u8 + (upper && prev_lower) as u8;
            (Run::Letter(k, lower), tokens)
        }
        (_, Class::Letter) => (Run::Letter(0, lower), 1),
        (Run::Digit(k), Class::Digit) => {
            let k = (k + 1) % 3;
            (Run::Digit(k), (k == 0) as u8)
        }
        (_, Class::Digit) => (Run::Digit(0), 1),
        (Run::Space, Class::Space) => (Run::Spaces(2), 1),
        (Run::Spaces(m), Class::Space) => {
            let m = (m + 1) % 8;
            (Run::Spaces(m), (m == 1) as u8)
        }
        (_, Class::Space) => (Run::Space, 0),
        (Run::Newline(k), Class::Newline) => {
            let k = (k + 1) % 2;
            (Run::Newline(k), (k == 0) as u8)
        }
        (_, Class::Newline) => (Run::Newline(0), 1),
        (Run::Punct(k), Class::Punct) => {
            let k = (k + 1) % 2;
            (Run::Punct(k), (k == 0) as u8)
        }
        (_, Class::Punct) => (Run::Punct(0), 1),
        (_, Class::Wide) => (Run::None, 1),
    };
    next.code() | (tokens << STATE_BITS)
}

/// [`next_step`] for every state and ASCII byte, made at compile time.
static ASCII_STEPS: [[u8; 128]; STATES] = {
    let mut table = [[0u8; 128]; STATES];
    let mut state = 0;
    while state < STATES {
        let mut b = 0;
        while b < 128 {
            let byte = b as u8;
            table[state][b] = next_step(
                state as u8,
                ASCII_CLASS[b],
                byte.is_ascii_lowercase(),
                byte.is_ascii_uppercase(),
            );
            b += 1;
        }
        state += 1;
    }
    table
};

/// The prompt tokens of a chat request: messages (text parts counted, images reckoned) and
/// tool definitions. Messages are read one at a time from the raw body.
pub fn chat_prompt(body: &JsonBody) -> u64 {
    let mut total = PER_REPLY;
    if let Some(messages) = body.raw("messages") {
        let _ = for_each_message(messages, |m| {
            total += PER_MESSAGE;
            total += m.role.as_deref().map_or(0, count);
            let images = for_each_text(m.content, |text| total += count(&text));
            total += images * IMAGE_TOKENS;
            if let Some(calls) = m.tool_calls {
                total += count(calls.get());
            }
        });
    }
    if let Some(tools) = body.raw_str("tools") {
        total += count(tools);
    }
    total
}

/// What [`chat_prompt`] cannot exceed, read without parsing: no text, role or raw JSON counts
/// for more tokens than its bytes (the escaped form is never shorter), a message's own tokens
/// are fewer than the bytes of its braces, keys and role, and an image part (which counts for
/// more than its bytes) names `image_url`.
pub fn chat_prompt_at_most(body: &JsonBody) -> u64 {
    let messages = body.raw("messages").unwrap_or_default();
    let images = memchr::memmem::find_iter(messages, b"image_url").count() as u64;
    let tools = body.raw("tools").map_or(0, <[u8]>::len);
    (messages.len() + tools) as u64 + PER_REPLY + images * IMAGE_TOKENS
}

/// The tokens of an embeddings request's input.
pub fn embedding_input(body: &JsonBody) -> u64 {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Item<'a> {
        Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
        Tokens(Vec<serde::de::IgnoredAny>),
        Number(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Input<'a> {
        One(#[serde(borrow)] std::borrow::Cow<'a, str>),
        Many(#[serde(borrow)] Vec<Item<'a>>),
    }
    match body.get::<Input>("input") {
        Some(Ok(Input::One(s))) => count(&s),
        Some(Ok(Input::Many(items))) => items
            .iter()
            .map(|i| match i {
                Item::Text(s) => count(s),
                Item::Tokens(t) => t.len() as u64,
                Item::Number(_) => 1,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn body(v: serde_json::Value) -> JsonBody {
        JsonBody::parse(Bytes::from(v.to_string())).unwrap()
    }

    #[test]
    fn estimates_like_a_tokenizer() {
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
        let b = body(json!({"messages": [{"role": "user", "content": "hello world"}]}));
        assert_eq!(chat_prompt(&b), 3 + 3 + 1 + 2);
        let b = body(json!({"input": ["hello world", [1, 2, 3]]}));
        assert_eq!(embedding_input(&b), 2 + 3);
    }

    /// Reference counts from `o200k_base` (tiktoken) for a few kinds of text; the estimate
    /// stays within [-15 %, +45 %] of each.
    #[test]
    fn stays_near_o200k_on_prose_code_json_and_other_scripts() {
        let samples: &[(&str, u64)] = &[
            (PROSE, PROSE_O200K),
            (CODE, CODE_O200K),
            (JSON, JSON_O200K),
            ("東京は日本の首都です。人口は約千四百万人です。", 17),
            (
                "Grüße aus München, schöne Straße! Ça va très bien, merci.",
                16,
            ),
            (
                "getUserById(userId: number): Promise<UserRecord> { return this.repository.findOneOrFail(userId); }",
                25,
            ),
            ("1234567890 3.14159 2026-11-23T20:49:46Z", 23),
        ];
        for (text, reference) in samples {
            let estimate = count(text) as f64;
            let ratio = estimate / *reference as f64;
            assert!(
                (0.85..=1.45).contains(&ratio),
                "{estimate} vs {reference} ({ratio:.2}) for {text:?}"
            );
        }
    }

    /// The tokens of a run of `run` characters of one class (`upper_breaks`: camelCase
    /// splits), as the estimate defines them: [`count`]'s state machine adds them up as a run
    /// grows.
    fn run_tokens(kind: Class, run: u64, upper_breaks: u64) -> u64 {
        match kind {
            // Common words are one token (with the space before them); long ones split.
            Class::Letter => 1 + upper_breaks + run.saturating_sub(1) / 6,
            Class::Digit => run.div_ceil(3),
            // A single space joins the next word; indentation runs are tokens of their own.
            Class::Space if run == 1 => 0,
            Class::Space => run.div_ceil(8),
            Class::Newline => run.div_ceil(2),
            Class::Punct => run.div_ceil(2),
            Class::Wide => 1,
        }
    }

    /// The runs read character by character, as first written: the byte-wise `count` must
    /// find exactly the same runs.
    fn reference_count(text: &str) -> u64 {
        fn class(c: char) -> Class {
            match c {
                'a'..='z' | 'A'..='Z' => Class::Letter,
                '0'..='9' => Class::Digit,
                ' ' | '\t' => Class::Space,
                '\n' | '\r' => Class::Newline,
                c if c.is_ascii() => Class::Punct,
                c if c.len_utf8() == 2 => Class::Letter,
                _ => Class::Wide,
            }
        }
        let mut tokens = 0u64;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let kind = class(c);
            let (mut run, mut upper_breaks, mut prev_lower) = (1u64, 0u64, c.is_lowercase());
            while let Some(&next) = chars.peek() {
                if class(next) != kind || kind == Class::Wide {
                    break;
                }
                if kind == Class::Letter {
                    if next.is_uppercase() && prev_lower {
                        upper_breaks += 1;
                    }
                    prev_lower = next.is_lowercase();
                }
                run += 1;
                chars.next();
            }
            tokens += run_tokens(kind, run, upper_breaks);
        }
        tokens
    }

    #[test]
    fn bytewise_count_equals_the_character_reading() {
        let samples = [
            PROSE,
            CODE,
            JSON,
            "東京は日本の首都です。人口は約千四百万人です。",
            "Grüße aus München, schöne Straße! Ça va très bien, merci. ΑλφαΒήτα ÉcoleNormale",
            "getUserById(userId: number) camelCaseÜberWord éÉéÉ aÀbB",
            "emoji 🎉🎉 mixed\r\n\n\t\t  indented   1234567 3.14 \u{7f}\u{1}",
            "",
            "a",
            "Ωmega",
        ];
        for text in samples {
            assert_eq!(count(text), reference_count(text), "{text:?}");
        }
    }

    /// A xorshift generator of numbers below a bound: the random texts repeat run to run.
    fn random_below(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |below| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        }
    }

    /// Runs of every class and length, mixed at random: the state machine's counts equal the
    /// run-by-run reading's.
    #[test]
    fn the_state_machine_counts_every_run_length_as_the_runs_do() {
        let pieces = [
            "a", "B", "z", "Q", "é", "É", "ß", "Ω", "ω", "0", "7", " ", "\t", "\n", "\r", ".", "{",
            "\"", "東", "🎉", "\u{7f}",
        ];
        let mut next = random_below(0x2545_F491_4F6C_DD1Du64);
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..next(12) {
                let piece = pieces[next(pieces.len())];
                for _ in 0..1 + next(20) {
                    text.push_str(piece);
                }
            }
            assert_eq!(count(&text), reference_count(&text), "{text:?}");
        }
    }

    /// A long prompt is admitted on [`chat_prompt_at_most`] before it is counted: random
    /// texts of every class (JSON-escaped, in text and image parts, roles, tool calls, tools,
    /// empty messages) never count for more.
    #[test]
    fn a_prompt_never_counts_for_more_than_its_bound() {
        let pieces = [
            "a",
            "B",
            "é",
            "É",
            "Ω",
            "0",
            "7",
            " ",
            r"\t",
            r"\n",
            r#"\""#,
            ".",
            "{",
            "東",
            "🎉",
            r"\u00e9",
            r"\ud83c\udf89",
            "aB",
            "x1",
        ];
        let mut next = random_below(0x2F6B_9A4C_15D3_E871u64);
        let text = |next: &mut dyn FnMut(usize) -> usize| {
            let mut s = String::new();
            for _ in 0..next(8) {
                let piece = pieces[next(pieces.len())];
                for _ in 0..1 + next(6) {
                    s.push_str(piece);
                }
            }
            s
        };
        for _ in 0..500 {
            let mut messages = Vec::new();
            for _ in 0..1 + next(6) {
                let role = text(&mut next);
                messages.push(match next(4) {
                    0 => "{}".to_string(),
                    1 => format!(r#"{{"role":"{role}","content":"{}"}}"#, text(&mut next)),
                    2 => format!(
                        r#"{{"role":"user","content":[{{"type":"text","text":"{}"}},{{"type":"image_url","image_url":{{"url":"x"}}}}]}}"#,
                        text(&mut next)
                    ),
                    _ => format!(
                        r#"{{"role":"assistant","tool_calls":[{{"id":"{}","function":{{"name":"f","arguments":"{}"}}}}]}}"#,
                        text(&mut next),
                        text(&mut next)
                    ),
                });
            }
            let raw = format!(
                r#"{{"model":"m","messages":[{}],"tools":[{{"name":"{}"}}]}}"#,
                messages.join(","),
                text(&mut next)
            );
            let body = JsonBody::parse(Bytes::from(raw.clone())).unwrap();
            assert!(chat_prompt(&body) <= chat_prompt_at_most(&body), "{raw}");
        }
    }

    /// Long texts are counted in two halves from a space after a non-space: the same count
    /// as one pass, wherever the split falls (runs of every class on both sides of it).
    #[test]
    fn a_long_text_counted_in_halves_counts_as_one_pass() {
        let pieces = [
            "a", "B", "é", "É", "Ω", "0", "7", " ", "\t", "\n", "\r", ".", "{", "東", "🎉", "word ",
        ];
        let mut next = random_below(0x9E37_79B9_7F4A_7C15u64);
        let mut split = 0;
        for _ in 0..500 {
            let mut text = String::new();
            while text.len() < SPLIT_FROM + next(3000) {
                let piece = pieces[next(pieces.len())];
                for _ in 0..1 + next(12) {
                    text.push_str(piece);
                }
            }
            split += usize::from(split_point(text.as_bytes()).is_some());
            let one_pass = Counter::new(Run::None).finish(text.as_bytes());
            assert_eq!(count(&text), one_pass, "{text:?}");
            assert_eq!(count(&text), reference_count(&text), "{text:?}");
        }
        assert!(split > 400, "the texts were split ({split} of 500)");
    }

    /// What the split relies on: a space after any state an ASCII non-space leaves is the
    /// single-space state, and adds nothing.
    #[test]
    fn a_space_after_a_non_space_starts_afresh() {
        for b in 0u8..0x80 {
            if ASCII_CLASS[usize::from(b)] == Class::Space {
                continue;
            }
            for row in &ASCII_STEPS {
                let after = row[usize::from(b)] & STATE_MASK;
                assert_eq!(
                    ASCII_STEPS[usize::from(after)][usize::from(b' ')],
                    Run::Space.code()
                );
            }
        }
    }

    const PROSE: &str = "The quick brown fox jumps over the lazy dog. Meanwhile, the gateway forwards every request to the right model, counts its tokens, and keeps each team within its budget for the month.";
    const PROSE_O200K: u64 = 37;
    const CODE: &str = "fn main() {\n    let config = load_config(\"tollgate.yaml\")?;\n    for route in config.routes.iter() {\n        println!(\"{}: {}\", route.name, route.path);\n    }\n}\n";
    const CODE_O200K: u64 = 41;
    const JSON: &str = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "temperature": 0.7, "max_tokens": 256}"#;
    const JSON_O200K: u64 = 47;
}
