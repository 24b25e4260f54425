//! Golden tests of the Messages dialect: requests read into the canonical chat request, and
//! canonical answers (whole and streamed) written back as Messages.

use bytes::BytesMut;
use serde_json::{Value, json};

use super::answer::{self, MessagesEncoder};
use super::request::{DecodeOptions, to_canonical};
use crate::dialect::StreamEncoder;
use crate::dialect::test_events as events;
use crate::error::GatewayError;
use crate::providers::{Frame, Usage};

const OPTIONS: DecodeOptions = DecodeOptions {
    strip_attribution: true,
    max_tokens_optional: false,
};

fn canonical(request: Value) -> Result<(Value, Vec<String>), GatewayError> {
    to_canonical(request.to_string().as_bytes(), OPTIONS).map(|c| (c.body, c.dropped))
}

/// A request shaped like Claude Code's (2.1.x): attribution line, cached system blocks, an
/// inline system turn, adaptive thinking, tools with `defer_loading`, and a tool round with
/// thinking sent back.
fn claude_code_request() -> Value {
    json!({
        "model": "qwen2.5-coder:1.5b",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.3.abc; cc_entrypoint=sdk-cli"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "list files"}]},
            {"role": "system", "content": "Reminder: be careful."},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "use ls", "signature": "sig=="},
                {"type": "text", "text": "Running ls."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt\nb.txt"}]},
                {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
        "tools": [
            {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}},
            {"name": "WebFetch", "description": "Fetch", "input_schema": {"type": "object"}, "defer_loading": true},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": []},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": "user_abc_session_1"},
        "temperature": 1,
    })
}

#[test]
fn a_claude_code_request_becomes_a_chat_request() {
    let (body, dropped) = canonical(claude_code_request()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "qwen2.5-coder:1.5b",
            "messages": [
                {"role": "system", "content": "You are Claude Code.\n\nBe concise."},
                {"role": "user", "content": "list files"},
                {"role": "system", "content": "Reminder: be careful."},
                {"role": "assistant", "content": "Running ls.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt\nb.txt"},
                {"role": "user", "content": "and now?"},
            ],
            "max_tokens": 32000,
            "stream": true,
            "temperature": 1.0,
            "tools": [
                {"type": "function", "function": {"name": "Bash", "description": "Run a command", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "WebFetch", "description": "Fetch", "parameters": {"type": "object"}}},
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
        })
    );
    // Nothing is left out silently: each omission is named for the log.
    for expected in [
        "thinking",
        "context_management",
        "output_config",
        "attribution header",
        "cache_control",
        "thinking history",
        "defer_loading",
        "metadata",
    ] {
        assert!(
            dropped.iter().any(|d| d == expected),
            "{expected} in {dropped:?}"
        );
    }
}

#[test]
fn the_attribution_line_stays_when_configured_so() {
    let keep = DecodeOptions {
        strip_attribution: false,
        ..OPTIONS
    };
    let c = to_canonical(claude_code_request().to_string().as_bytes(), keep).unwrap();
    let system = c.body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("x-anthropic-billing-header:"),
        "{system}"
    );
}

#[test]
fn images_tool_choices_and_errors_in_results_map() {
    let (body, _) = canonical(json!({
        "model": "m", "max_tokens": 10,
        "system": "plain system",
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "what is this?"},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "look", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "no such file", "is_error": true}]},
        ],
        "tool_choice": {"type": "tool", "name": "look"},
        "stop_sequences": ["END"],
        "top_k": 5,
    }))
    .unwrap();
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "plain system"})
    );
    assert_eq!(
        body["messages"][1]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "what is this?"},
        ])
    );
    assert_eq!(body["messages"][2]["content"], Value::Null);
    assert_eq!(
        body["messages"][3],
        json!({"role": "tool", "tool_call_id": "t1", "content": "Error: no such file"})
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "look"}})
    );
    assert_eq!(body["stop"], json!(["END"]));
}

#[test]
fn what_a_chat_target_cannot_do_is_refused_by_name() {
    let base = |extra: Value| {
        let mut r = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        canonical(r).map(|_| ()).unwrap_err().to_string()
    };
    let e = base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
    assert!(e.contains("web_search_20250305"), "{e}");
    let e = base(
        json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
    );
    assert!(e.contains("document"), "{e}");
    let e = base(json!({"mcp_servers": [{"type": "url", "url": "https://mcp"}]}));
    assert!(e.contains("mcp_servers"), "{e}");
    let e = base(json!({"frobnicate": true}));
    assert!(e.contains("frobnicate"), "{e}");
    let e = canonical(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_tokens"), "{e}");
}

#[test]
fn a_whole_chat_answer_becomes_a_message() {
    let completion = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "upstream-name",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "reasoning_content": "the user wants files",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls -la\"}"}}],
        }}],
    });
    let usage = Usage {
        prompt_tokens: 120,
        completion_tokens: 30,
        total_tokens: 150,
        cached_tokens: Some(100),
        ..Usage::default()
    };
    let body = answer::whole(completion.to_string().as_bytes(), &usage, "coder").unwrap();
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        message,
        json!({
            "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "coder",
            "content": [
                {"type": "thinking", "thinking": "the user wants files", "signature": ""},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls -la"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0},
        })
    );
}

#[test]
fn stop_reasons_map() {
    assert_eq!(answer::stop_reason(Some("stop")), "end_turn");
    assert_eq!(answer::stop_reason(Some("length")), "max_tokens");
    assert_eq!(answer::stop_reason(Some("tool_calls")), "tool_use");
    assert_eq!(answer::stop_reason(Some("content_filter")), "refusal");
    assert_eq!(answer::stop_reason(None), "end_turn");
}

fn chunk(delta: Value, finish: Option<&str>) -> Frame {
    let data = json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Frame::new(data.to_string(), true)
}

#[test]
fn a_chat_stream_becomes_the_messages_event_sequence() {
    let mut encoder = MessagesEncoder::new("coder", 42);
    let mut out = BytesMut::new();
    let mut usage_frame = Frame::new(
        json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 9}}).to_string(),
        false,
    );
    usage_frame.usage = Some(Usage {
        prompt_tokens: 50,
        completion_tokens: 9,
        total_tokens: 59,
        ..Usage::default()
    });
    usage_frame.usage_only = true;
    let frames = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"reasoning_content": "think"}), None),
        chunk(json!({"content": "Hi "}), None),
        chunk(json!({"content": "there"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"comm"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "and\": \"ls\"}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "Read", "arguments": "{}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        usage_frame,
        Frame::done(),
    ];
    for frame in &frames {
        encoder.frame(frame, &mut out);
    }
    encoder.finish(&mut out);
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    // Before the upstream's count arrives, message_start carries the gateway's estimate.
    assert_eq!(got[0].1["message"]["usage"]["input_tokens"], 42);
    assert_eq!(got[0].1["message"]["model"], "coder");
    assert_eq!(got[2].1["content_block"]["type"], "thinking");
    assert_eq!(
        got[5].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        got[9].1["content_block"],
        json!({"type": "tool_use", "id": "call_a", "name": "Bash", "input": {}})
    );
    // The arguments arrive exactly as the model wrote them.
    let partial: String = [10, 11]
        .iter()
        .map(|i| got[*i].1["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(partial, "{\"command\": \"ls\"}");
    assert_eq!(got[13].1["index"], 3);
    assert_eq!(got[16].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        got[16].1["usage"],
        json!({"input_tokens": 50, "output_tokens": 9, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
}

#[test]
fn a_stream_without_done_is_still_closed_and_errors_use_the_envelope() {
    let mut encoder = MessagesEncoder::new("m", 1);
    let mut out = BytesMut::new();
    encoder.frame(&chunk(json!({"content": "partial"}), None), &mut out);
    encoder.finish(&mut out);
    let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));

    let mut encoder = MessagesEncoder::new("m", 1);
    let mut out = BytesMut::new();
    encoder.frame(&chunk(json!({"content": "partial"}), None), &mut out);
    let error = GatewayError::UpstreamTimeout {
        provider: "p".into(),
        phase: "idle",
    };
    encoder.error(&error, &mut out);
    let got = events(&out);
    let (name, data) = got.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "timeout_error");
}

#[test]
fn errors_have_anthropics_envelope_and_types() {
    let body = super::error_body(&GatewayError::InvalidKey);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        super::error_body(&GatewayError::ModelForbidden("x".into()))["error"]["type"],
        "permission_error"
    );
    assert_eq!(
        super::error_body(&GatewayError::NoTargetAvailable {
            model: "x".into(),
            retry_after: None
        })["error"]["type"],
        "overloaded_error"
    );
}

/// Compact chat chunks as a pass-through stream scans them, each token's text read where it
/// stands, and in every other shape.
pub(crate) fn stream_of_every_shape() -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}).to_string()
    };
    vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo \"w\" \u{e9} \\ \n"}), Value::Null),
        chunk(json!({"reasoning_content": "hmm"}), Value::Null),
        chunk(json!({"content": "after"}), Value::Null),
        chunk(
            json!({"content": "", "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Value::Null,
        ),
        chunk(json!({"content": "tail"}), json!("length")),
    ]
}

/// Each chunk scanned (a token's text read where it stands) or parsed whole: the same events.
#[test]
fn tokens_read_where_they_stand_make_the_events_parsed_chunks_make() {
    let run = |scanned: bool| {
        let mut encoder = MessagesEncoder::new("coder", 42);
        let mut out = BytesMut::new();
        for data in stream_of_every_shape() {
            let frame = match scanned {
                true => crate::providers::openai::scanned_frame(&data),
                false => Frame::new(data, true),
            };
            encoder.frame(&frame, &mut out);
        }
        encoder.frame(&Frame::done(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    };
    let scanned = run(true);
    assert_eq!(scanned, run(false));
    assert!(
        scanned.contains(r#""delta":{"type":"text_delta","text":"lo \"w\" é \\ \n"}"#),
        "{scanned}"
    );
    assert!(
        scanned.contains(r#""stop_reason":"max_tokens""#),
        "{scanned}"
    );
}
