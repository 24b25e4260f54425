//! Canonical (OpenAI chat) answers written back as the Responses API: a whole
//! `chat.completion` as a `response` object, and `chat.completion.chunk`s as its events
//! (`response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.reasoning_summary_text.delta`, the
//! matching `.done` events, `response.completed`). One pure state machine, chunks in, events
//! out; the finished response (for the store) is handed over before `response.completed`.

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use crate::dialect::canonical::{Chunk, Completion, ToolCallDelta, content_text};
use crate::dialect::object;
use crate::error::GatewayError;
use crate::json_out;
use crate::providers::translate::unix_now;
use crate::providers::{Frame, Usage, write_sse_event};

/// What every response object of one answer shares.
#[derive(Debug, Clone)]
pub struct ResponseShape {
    pub id: String,
    /// The model as the client named it.
    pub model: String,
    pub created_at: u64,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub store: bool,
    /// Tools the client declared `custom`: their calls are `custom_tool_call` items.
    pub custom_tools: Vec<String>,
}

impl ResponseShape {
    pub fn new(model: &str) -> Self {
        Self {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            created_at: unix_now(),
            instructions: None,
            previous_response_id: None,
            store: true,
            custom_tools: Vec::new(),
        }
    }

    /// The response object with `output`, in `status`.
    pub fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<&Usage>,
        incomplete: Option<&str>,
    ) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete.map(|reason| json!({"reason": reason})),
            "instructions": self.instructions,
            "max_output_tokens": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": null, "summary": null},
            "store": self.store,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage.map(usage_json),
            "metadata": {},
        })
    }

    fn call_item(
        &self,
        id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        status: &str,
    ) -> Value {
        if self.custom_tools.iter().any(|t| t == name) {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|v| v.get("input").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| arguments.to_owned());
            json!({"type": "custom_tool_call", "id": id, "call_id": call_id, "name": name, "input": input, "status": status})
        } else {
            json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
        }
    }
}

/// The Responses usage object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens.unwrap_or(0)},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens.unwrap_or(0)},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": text}]})
}

/// `length` means the output limit cut the answer.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// The finished answer: the response object, and the assistant turn as canonical messages
/// (what a stored response adds to a chain).
pub struct Finished {
    pub response: Value,
    pub output_messages: Vec<Value>,
}

/// The canonical assistant turn for an answer's text and calls.
fn assistant_turn(text: &str, calls: &[(String, String, String)]) -> Vec<Value> {
    if text.is_empty() && calls.is_empty() {
        return Vec::new();
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
    }
    vec![message]
}

/// A whole canonical answer as a response object.
pub fn whole(body: &[u8], usage: &Usage, shape: &ResponseShape) -> Result<Finished, String> {
    let completion: Completion =
        serde_json::from_slice(body).map_err(|e| format!("unexpected answer: {e}"))?;
    let choice = completion.choices.into_iter().next();
    let finish = choice.as_ref().and_then(|c| c.finish_reason.clone());
    let mut output = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    if let Some(message) = choice.and_then(|c| c.message) {
        if let Some(reasoning) = message.reasoning_content.filter(|r| !r.is_empty()) {
            output.push(reasoning_item(&item_id("rs"), &reasoning));
        }
        text = content_text(message.content);
        if !text.is_empty() {
            output.push(message_item(&item_id("msg"), &text, "completed"));
        }
        for call in message.tool_calls.unwrap_or_default() {
            let call_id = call.id.unwrap_or_else(|| item_id("call"));
            output.push(shape.call_item(
                &item_id("fc"),
                &call_id,
                &call.function.name,
                &call.function.arguments,
                "completed",
            ));
            calls.push((call_id, call.function.name, call.function.arguments));
        }
    }
    let (status, incomplete) = status_of(finish.as_deref());
    Ok(Finished {
        response: shape.object(status, &output, Some(usage), incomplete),
        output_messages: assistant_turn(&text, &calls),
    })
}

/// The output item being streamed.
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        index: usize,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes canonical chunks as Responses events, keeping the output for `response.completed`.
pub struct ResponsesEncoder {
    shape: ResponseShape,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    output: Vec<Value>,
    /// The assistant turn, for the store: text and (call id, name, arguments).
    text: String,
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Usage>,
    ended: bool,
    /// Set when the answer is complete: what the store keeps, taken before the final event.
    finished: Option<Finished>,
    /// The `response.completed` event, held back until the store has the response.
    final_event: Option<Bytes>,
}

impl ResponsesEncoder {
    pub fn new(shape: ResponseShape) -> Self {
        Self {
            shape,
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            text: String::new(),
            calls: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
            finished: None,
            final_event: None,
        }
    }

    fn event(&mut self, name: &str, mut data: Value, out: &mut BytesMut) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        write_sse_event(Some(name.as_bytes()), &json_out::to_vec(&data), out);
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        // One object for both events, moved in (`json!` would copy it through serde).
        let data = object([(
            "response",
            self.shape.object("in_progress", &[], None, None),
        )]);
        self.event("response.created", data.clone(), out);
        self.event("response.in_progress", data, out);
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    fn close(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output_index();
        let item = match open {
            Open::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    out,
                );
                self.event(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                    out,
                );
                reasoning_item(&id, &text)
            }
            Open::Message { id, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.event("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}), out);
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                self.text.push_str(&text);
                message_item(&id, &text, "completed")
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                let item = self
                    .shape
                    .call_item(&id, &call_id, &name, &arguments, "completed");
                if item["type"] == "custom_tool_call" {
                    self.event(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": index, "input": item["input"]}),
                        out,
                    );
                } else {
                    self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": arguments}),
                        out,
                    );
                }
                self.calls.push((call_id, name, arguments));
                item
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
            out,
        );
        self.output.push(item);
    }

    fn open_reasoning(&mut self, delta: &str, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let id = item_id("rs");
            let index = self.output_index();
            self.event("response.output_item.added", json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}), out);
            self.event("response.reasoning_summary_part.added", json!({"item_id": id, "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}), out);
            self.open = Some(Open::Reasoning {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Open::Reasoning { id, text }) = &mut self.open {
            text.push_str(delta);
            let id = id.clone();
            self.event(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": delta}),
                out,
            );
        }
    }

    fn open_text(&mut self, delta: &str, out: &mut BytesMut) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let id = item_id("msg");
            let index = self.output_index();
            self.event("response.output_item.added", json!({"output_index": index, "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}), out);
            self.event("response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}), out);
            self.open = Some(Open::Message {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Open::Message { id, text }) = &mut self.open {
            text.push_str(delta);
            text_delta(self.sequence, id, index, delta, out);
            self.sequence += 1;
        }
    }

    fn on_tool_call(&mut self, call: ToolCallDelta, out: &mut BytesMut) {
        let position = call.index.unwrap_or(0);
        let same = matches!(&self.open, Some(Open::Call { index, .. }) if *index == position);
        if !same {
            self.close(out);
            let name = call
                .function
                .as_ref()
                .and_then(|f| f.name.clone())
                .unwrap_or_default();
            let call_id = call.id.clone().unwrap_or_else(|| item_id("call"));
            let id = item_id("fc");
            let index = self.output_index();
            let item = self
                .shape
                .call_item(&id, &call_id, &name, "", "in_progress");
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
                out,
            );
            self.open = Some(Open::Call {
                index: position,
                id,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(delta) = call
            .function
            .and_then(|f| f.arguments)
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let index = self.output_index();
        let custom = matches!(&self.open, Some(Open::Call { name, .. }) if self.shape.custom_tools.contains(name));
        if let Some(Open::Call { id, arguments, .. }) = &mut self.open {
            arguments.push_str(&delta);
            let id = id.clone();
            // Custom tools take their input whole at the end (it is inside the JSON arguments).
            if !custom {
                self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": delta}),
                    out,
                );
            }
        }
    }

    fn on_chunk(&mut self, chunk: Chunk, out: &mut BytesMut) {
        for choice in chunk.choices {
            let delta = choice.delta.unwrap_or_default();
            if let Some(r) = delta.reasoning_content.filter(|r| !r.is_empty()) {
                self.open_reasoning(&r, out);
            }
            if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                self.open_text(&t, out);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                self.on_tool_call(call, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
        }
    }

    /// The answer is complete: every item closed, the final response built; the final event
    /// waits in `final_event` until the store has it.
    fn end(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(out);
        self.close(out);
        let (status, incomplete) = status_of(self.finish.as_deref());
        let response = self
            .shape
            .object(status, &self.output, self.usage.as_ref(), incomplete);
        let name = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let mut event = BytesMut::new();
        self.event(name, object([("response", response.clone())]), &mut event);
        self.final_event = Some(event.freeze());
        self.finished = Some(Finished {
            response,
            output_messages: assistant_turn(&self.text, &self.calls),
        });
    }

    /// The finished response, once the answer is complete (taken once, for the store).
    pub fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }

    /// The held-back final event.
    pub fn take_final_event(&mut self) -> Option<Bytes> {
        self.final_event.take()
    }

    pub fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        if let Some(usage) = frame.usage {
            self.usage = Some(usage);
        }
        if frame.is_done() {
            self.end(out);
            return;
        }
        if let Some(message) = &frame.error {
            self.fail("upstream_error", message, out);
            return;
        }
        self.start(out);
        // A token's chunk: its text alone.
        if let Some(text) = frame.chat_text_delta() {
            if !text.is_empty() {
                self.open_text(&text, out);
            }
            return;
        }
        if let Ok(chunk) = serde_json::from_slice::<Chunk>(&frame.data) {
            self.on_chunk(chunk, out);
        }
    }

    fn fail(&mut self, code: &str, message: &str, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.start(out);
        let mut response = self
            .shape
            .object("failed", &self.output, self.usage.as_ref(), None);
        response["error"] = json!({"code": code, "message": message});
        self.event("response.failed", json!({"response": response}), out);
    }

    pub fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        self.fail(error.code(), &error.to_string(), out);
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        self.end(out);
    }
}

/// A `response.output_text.delta` event, written directly: it is the event of every token (a
/// `Value` for it cost a map with hashed keys and a copy of the item's id). The members in
/// the order [`ResponsesEncoder::event`] writes them.
fn text_delta(sequence: u64, id: &str, index: usize, delta: &str, out: &mut BytesMut) {
    let mut data = Vec::with_capacity(delta.len() + id.len() + 128);
    data.extend_from_slice(br#"{"item_id":"#);
    json_out::write_str(&mut data, id);
    data.extend_from_slice(br#","output_index":"#);
    data.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    data.extend_from_slice(br#","content_index":0,"delta":"#);
    json_out::write_str(&mut data, delta);
    data.extend_from_slice(
        br#","logprobs":[],"type":"response.output_text.delta","sequence_number":"#,
    );
    data.extend_from_slice(itoa::Buffer::new().format(sequence).as_bytes());
    data.push(b'}');
    write_sse_event(Some(b"response.output_text.delta"), &data, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text delta written directly is the event a `Value` made, byte for byte.
    #[test]
    fn a_text_delta_is_written_as_its_value_would_be() {
        for delta in ["Hello", "line\nwith \"quotes\" and \\ é 🎉 \u{1}", ""] {
            for (sequence, index) in [(0, 0), (41, 3)] {
                let mut written = BytesMut::new();
                text_delta(sequence, "msg_abc\"1", index, delta, &mut written);
                let mut encoder = ResponsesEncoder::new(ResponseShape::new("m"));
                encoder.sequence = sequence;
                let mut expected = BytesMut::new();
                encoder.event(
                    "response.output_text.delta",
                    json!({"item_id": "msg_abc\"1", "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
                    &mut expected,
                );
                assert_eq!(written, expected, "{delta:?}");
            }
        }
    }

    /// Each chunk scanned (a token's text read where it stands) or parsed whole: the same
    /// events (item ids aside, made afresh each time).
    #[test]
    fn tokens_read_where_they_stand_make_the_events_parsed_chunks_make() {
        let ids = regex::Regex::new(r#""(msg|fc|rs|resp)_[0-9a-f]+"|"created_at":[0-9]+"#).unwrap();
        let run = |scanned: bool| {
            let mut encoder = ResponsesEncoder::new(ResponseShape::new("m"));
            let mut out = BytesMut::new();
            for data in crate::dialect::messages::tests::stream_of_every_shape() {
                let frame = match scanned {
                    true => crate::providers::openai::scanned_frame(&data),
                    false => Frame::new(data, true),
                };
                encoder.frame(&frame, &mut out);
            }
            encoder.frame(&Frame::done(), &mut out);
            let text = String::from_utf8(out.to_vec()).unwrap();
            ids.replace_all(&text, "ID").into_owned()
        };
        let scanned = run(true);
        assert_eq!(scanned, run(false));
        assert!(
            scanned.contains(r#""delta":"lo \"w\" é \\ \n""#),
            "{scanned}"
        );
    }
}
