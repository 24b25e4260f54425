//! Canonical (OpenAI chat) answers written back as Messages: a whole `chat.completion` as a
//! `message`, and `chat.completion.chunk`s as the Messages event sequence
//! (`message_start`, `ping`, `content_block_start|delta|stop`, `message_delta`, `message_stop`).

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::dialect::canonical::{Chunk, Completion, ToolCallDelta, content_text};
use crate::dialect::{StreamEncoder, object};
use crate::error::GatewayError;
use crate::json_out;
use crate::providers::translate::arguments_object;
use crate::providers::{Frame, Usage, write_sse_event};
use crate::telemetry::json_line::{JsonObject, key};

/// OpenAI's finish reason as Anthropic's stop reason.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage object: `input_tokens` excludes what the cache read or wrote.
pub fn usage_json(usage: &Usage) -> Value {
    let read = usage.cached_tokens.unwrap_or(0);
    let written = usage.cache_write_tokens.unwrap_or(0);
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(read + written),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    })
}

/// [`usage_json`]'s members, written directly (a stream's first and last events).
fn write_usage(o: &mut JsonObject<'_>, usage: &Usage) {
    let read = usage.cached_tokens.unwrap_or(0);
    let written = usage.cache_write_tokens.unwrap_or(0);
    o.u64(
        key!("input_tokens"),
        usage.prompt_tokens.saturating_sub(read + written),
    )
    .u64(key!("output_tokens"), usage.completion_tokens)
    .u64(key!("cache_read_input_tokens"), read)
    .u64(key!("cache_creation_input_tokens"), written);
}

/// A Messages id for a canonical answer's id.
fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    }
}

/// A whole canonical answer as a Messages `message`, named `model` (the client's name).
pub fn whole(body: &[u8], usage: &Usage, model: &str) -> Result<Bytes, String> {
    let completion: Completion =
        serde_json::from_slice(body).map_err(|e| format!("unexpected answer: {e}"))?;
    let choice = completion.choices.into_iter().next();
    let finish = choice.as_ref().and_then(|c| c.finish_reason.clone());
    let mut content = Vec::new();
    if let Some(message) = choice.and_then(|c| c.message) {
        if let Some(thinking) = message.reasoning_content.filter(|r| !r.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        let text = content_text(message.content);
        if !text.is_empty() {
            content.push(object([("type", "text".into()), ("text", text.into())]));
        }
        for call in message.tool_calls.unwrap_or_default() {
            let input = arguments_object(&call.function.arguments)
                .map_err(|_| "a tool call's arguments are not a JSON object".to_owned())?;
            content.push(json!({
                "type": "tool_use",
                "id": call.id.unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::new_v4().simple())),
                "name": call.function.name,
                "input": input,
            }));
        }
    }
    let message = json!({
        "id": message_id(completion.id.as_deref()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish.as_deref()),
        "stop_sequence": null,
        "usage": usage_json(usage),
    });
    Ok(Bytes::from(json_out::to_vec(&message)))
}

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    /// The OpenAI tool-call index it streams.
    Tool(usize),
}

/// Writes canonical chunks as Messages events. One pure state machine: chunks in, events out.
pub struct MessagesEncoder {
    model: String,
    /// `input_tokens` for `message_start` until the upstream's count arrives (the gateway's
    /// estimate: a client reading context size from it must never see zero).
    prompt_estimate: u64,
    started: bool,
    open: Option<Block>,
    /// Index of the next content block.
    next_index: usize,
    /// OpenAI tool-call index → content block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<String>,
    usage: Option<Usage>,
    ended: bool,
}

impl MessagesEncoder {
    pub fn new(model: &str, prompt_estimate: u64) -> Self {
        Self {
            model: model.to_owned(),
            prompt_estimate,
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    /// The upstream's usage, or until it comes the prompt's estimate.
    fn usage_so_far(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            prompt_tokens: self.prompt_estimate,
            ..Usage::default()
        })
    }

    fn event(name: &str, data: &Value, out: &mut BytesMut) {
        write_sse_event(Some(name.as_bytes()), &json_out::to_vec(data), out);
    }

    fn start(&mut self, id: Option<&str>, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = self.usage_so_far();
        // The stream's fixed events are written member by member: a `Value` for each cost a
        // map with hashed keys per member, more than the rest of the event's work.
        let mut data = Vec::with_capacity(320);
        let mut event = JsonObject::begin(&mut data);
        event
            .str(key!("type"), "message_start")
            .object(key!("message"), |m| {
                m.str(key!("id"), &message_id(id))
                    .str(key!("type"), "message")
                    .str(key!("role"), "assistant")
                    .str(key!("model"), &self.model)
                    .array(key!("content"), &[] as &[()], |_, _| {})
                    .null(key!("stop_reason"))
                    .null(key!("stop_sequence"))
                    .object(key!("usage"), |u| write_usage(u, &usage));
            });
        event.end();
        write_sse_event(Some(b"message_start"), &data, out);
        write_sse_event(Some(b"ping"), br#"{"type":"ping"}"#, out);
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            let mut data = Vec::with_capacity(48);
            JsonObject::begin(&mut data)
                .str(key!("type"), "content_block_stop")
                .u64(key!("index"), (self.next_index - 1) as u64)
                .end();
            write_sse_event(Some(b"content_block_stop"), &data, out);
        }
    }

    /// Opens `block` unless it is the one open (then `start` is not made); returns its index.
    fn open(&mut self, block: Block, start: impl FnOnce() -> Value, out: &mut BytesMut) -> usize {
        if self.open == Some(block) {
            return self.next_index - 1;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(block);
        Self::event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start()}),
            out,
        );
        index
    }

    /// A `content_block_delta` whose delta is `{"type": kind, field: text}`, written directly:
    /// it is the event of every token (a `Value` for it cost a map with hashed keys, twice).
    fn delta(index: usize, kind: &str, field: &str, text: &str, out: &mut BytesMut) {
        let mut data = Vec::with_capacity(text.len() + 96);
        data.extend_from_slice(br#"{"type":"content_block_delta","index":"#);
        data.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
        data.extend_from_slice(br#","delta":{"type":"#);
        json_out::write_str(&mut data, kind);
        data.push(b',');
        json_out::write_str(&mut data, field);
        data.push(b':');
        json_out::write_str(&mut data, text);
        data.extend_from_slice(b"}}");
        write_sse_event(Some(b"content_block_delta"), &data, out);
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut BytesMut) {
        self.start(chunk.id.as_deref(), out);
        for choice in chunk.choices {
            let delta = choice.delta.unwrap_or_default();
            if let Some(thinking) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                let start = || json!({"type": "thinking", "thinking": "", "signature": ""});
                let index = self.open(Block::Thinking, start, out);
                Self::delta(index, "thinking_delta", "thinking", &thinking, out);
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                let start = || json!({"type": "text", "text": ""});
                let index = self.open(Block::Text, start, out);
                Self::delta(index, "text_delta", "text", &text, out);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                self.on_tool_call(call, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.close(out);
                self.finish = Some(reason);
            }
        }
    }

    fn on_tool_call(&mut self, call: ToolCallDelta, out: &mut BytesMut) {
        let position = call.index.unwrap_or(0);
        let function = call.function;
        let known = self
            .tool_blocks
            .iter()
            .find(|(p, _)| *p == position)
            .map(|(_, b)| *b);
        let index = match known {
            Some(index) => index,
            None => {
                let name = function
                    .as_ref()
                    .and_then(|f| f.name.clone())
                    .unwrap_or_default();
                let id = call
                    .id
                    .unwrap_or_else(|| format!("toolu_{}", uuid::Uuid::new_v4().simple()));
                let start = || json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let index = self.open(Block::Tool(position), start, out);
                self.tool_blocks.push((position, index));
                index
            }
        };
        if let Some(arguments) = function.and_then(|f| f.arguments).filter(|a| !a.is_empty()) {
            // The arguments go on exactly as the model wrote them.
            Self::delta(index, "input_json_delta", "partial_json", &arguments, out);
        }
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(None, out);
        self.close(out);
        let usage = self.usage_so_far();
        let mut data = Vec::with_capacity(224);
        let mut event = JsonObject::begin(&mut data);
        event
            .str(key!("type"), "message_delta")
            .object(key!("delta"), |d| {
                d.str(key!("stop_reason"), stop_reason(self.finish.as_deref()))
                    .null(key!("stop_sequence"));
            })
            .object(key!("usage"), |u| write_usage(u, &usage));
        event.end();
        write_sse_event(Some(b"message_delta"), &data, out);
        write_sse_event(Some(b"message_stop"), br#"{"type":"message_stop"}"#, out);
    }
}

impl StreamEncoder for MessagesEncoder {
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        if let Some(usage) = frame.usage {
            self.usage = Some(usage);
        }
        if frame.is_done() {
            self.end(out);
            return;
        }
        if let Some(message) = &frame.error {
            // An upstream's in-stream error (already free of provider keys) ends the stream.
            self.ended = true;
            let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            Self::event("error", &body, out);
            return;
        }
        // A token's chunk after the first (which names the message): its text alone.
        if self.started
            && let Some(text) = frame.chat_text_delta()
        {
            if !text.is_empty() {
                let start = || json!({"type": "text", "text": ""});
                let index = self.open(Block::Text, start, out);
                Self::delta(index, "text_delta", "text", &text, out);
            }
            return;
        }
        if let Ok(chunk) = serde_json::from_slice::<Chunk>(&frame.data) {
            self.on_chunk(chunk, out);
        }
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        self.ended = true;
        Self::event("error", &super::error_body(error), out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.end(out);
    }
}

/// A Messages stream from a target that speaks Messages: events go out as they came.
pub struct NativeEncoder;

impl StreamEncoder for NativeEncoder {
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        frame.write_sse(out);
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        MessagesEncoder::event("error", &super::error_body(error), out);
    }

    fn finish(&mut self, _out: &mut BytesMut) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's first and last events, written directly, are the events `Value`s made,
    /// byte for byte.
    #[test]
    fn the_fixed_events_are_written_as_their_values_would_be() {
        let usage = Usage {
            prompt_tokens: 120,
            completion_tokens: 7,
            total_tokens: 127,
            cached_tokens: Some(20),
            cache_write_tokens: Some(5),
            ..Usage::default()
        };
        for (model, id, finish) in [
            ("claude \"q\"", Some("chatcmpl-1"), Some("length")),
            ("m", Some("msg_x"), None),
        ] {
            let mut encoder = MessagesEncoder::new(model, 42);
            encoder.usage = Some(usage);
            let mut written = BytesMut::new();
            encoder.start(id, &mut written);
            encoder.open(
                Block::Text,
                || json!({"type": "text", "text": ""}),
                &mut written,
            );
            encoder.finish = finish.map(str::to_owned);
            encoder.end(&mut written);

            let mut expected = BytesMut::new();
            let start = json!({"type": "message_start", "message": {"id": message_id(id), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage_json(&usage)}});
            MessagesEncoder::event("message_start", &start, &mut expected);
            MessagesEncoder::event("ping", &json!({"type": "ping"}), &mut expected);
            let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
            MessagesEncoder::event("content_block_start", &block, &mut expected);
            MessagesEncoder::event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
                &mut expected,
            );
            let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null}, "usage": usage_json(&usage)});
            MessagesEncoder::event("message_delta", &delta, &mut expected);
            MessagesEncoder::event(
                "message_stop",
                &json!({"type": "message_stop"}),
                &mut expected,
            );
            assert_eq!(written, expected);
        }
    }

    /// The delta written directly is the event a `Value` made, byte for byte.
    #[test]
    fn a_delta_is_written_as_its_value_would_be() {
        for (kind, field, text) in [
            ("text_delta", "text", "Hello"),
            (
                "text_delta",
                "text",
                "line\nwith \"quotes\" and \\ é 🎉 \u{1}",
            ),
            ("thinking_delta", "thinking", ""),
            ("input_json_delta", "partial_json", r#"{"path": "a\b"}"#),
        ] {
            for index in [0, 7, 12345] {
                let mut written = BytesMut::new();
                MessagesEncoder::delta(index, kind, field, text, &mut written);
                let mut expected = BytesMut::new();
                MessagesEncoder::event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": kind, field: text}}),
                    &mut expected,
                );
                assert_eq!(written, expected, "{kind} {text:?}");
            }
        }
    }
}
