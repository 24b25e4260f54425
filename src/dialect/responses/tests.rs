//! Golden tests of the Responses dialect: Codex-shaped requests read into the canonical chat
//! request, and canonical answers (whole and streamed) written back as Responses.

use bytes::BytesMut;
use serde_json::{Value, json};

use super::answer::{self, ResponseShape, ResponsesEncoder};
use super::request::to_canonical;
use crate::dialect::test_events as events;
use crate::providers::{Frame, Usage};

/// A request shaped like Codex's (0.17x): developer messages, the whole history with
/// reasoning, function and custom tool calls and their outputs, hosted and namespaced tools.
fn codex_request() -> Value {
    json!({
        "model": "qwen2.5-coder:1.5b",
        "stream": true,
        "store": false,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "main.rs"},
            {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done!"},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Run", "strict": false, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "custom", "name": "apply_patch", "description": "Edit files", "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}},
            {"type": "namespace", "name": "multi_agent_v1", "tools": []},
            {"type": "web_search", "external_web_access": false},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "client_metadata": {"turn_id": "t"},
    })
}

#[test]
fn a_codex_request_becomes_a_chat_request() {
    let c = to_canonical(codex_request().to_string().as_bytes(), &[]).unwrap();
    assert!(c.stream && !c.store);
    assert_eq!(c.custom_tools, ["apply_patch"]);
    let messages = c.body["messages"].as_array().unwrap();
    assert_eq!(
        messages,
        &vec![
            json!({"role": "system", "content": "You are Codex."}),
            json!({"role": "user", "content": "fix the bug"}),
            json!({"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
            ]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "main.rs"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_2", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}},
            ]}),
            json!({"role": "tool", "tool_call_id": "call_2", "content": "Done!"}),
        ]
    );
    let tools = c.body["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["function"]["name"], "exec_command");
    let patch = &tools[1]["function"];
    assert_eq!(patch["parameters"]["required"], json!(["input"]));
    assert!(
        patch["description"]
            .as_str()
            .unwrap()
            .contains("start: patch")
    );
    assert_eq!(c.body["tool_choice"], "auto");
    for expected in [
        "reasoning items",
        "namespace tools (multi_agent_v1)",
        "web_search tool",
        "include",
        "reasoning",
        "prompt_cache_key",
        "client_metadata",
    ] {
        assert!(
            c.dropped.iter().any(|d| d == expected),
            "{expected} in {:?}",
            c.dropped
        );
    }
}

#[test]
fn instructions_history_schemas_and_limits_map() {
    let history = vec![
        json!({"role": "user", "content": "earlier"}),
        json!({"role": "assistant", "content": "answer"}),
    ];
    let request = json!({
        "model": "m", "instructions": "Be terse.", "input": "now", "max_output_tokens": 50,
        "text": {"format": {"type": "json_schema", "name": "person", "schema": {"type": "object"}, "strict": true}},
    });
    let c = to_canonical(request.to_string().as_bytes(), &history).unwrap();
    assert_eq!(
        c.body["messages"],
        json!([
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "now"},
        ])
    );
    // The stored conversation holds the input, not the instructions (they do not carry over).
    assert_eq!(
        c.input_messages,
        vec![json!({"role": "user", "content": "now"})]
    );
    assert_eq!(c.body["max_tokens"], 50);
    assert_eq!(
        c.body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object"}, "strict": true}})
    );
}

#[test]
fn what_a_chat_target_cannot_do_is_refused_by_name() {
    let refuse = |request: Value| {
        to_canonical(request.to_string().as_bytes(), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = refuse(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}));
    assert!(e.contains("item_reference"), "{e}");
    let e = refuse(
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
    );
    assert!(e.contains("input_file"), "{e}");
    let e = refuse(json!({"model": "m", "input": "x", "conversation": "conv_1"}));
    assert!(e.contains("conversation"), "{e}");
    let e = refuse(json!({"model": "m", "input": "x", "frobnicate": 1}));
    assert!(e.contains("frobnicate"), "{e}");
    let e = refuse(json!({"model": "m", "input": "x", "tools": [{"type": "teleport"}]}));
    assert!(e.contains("teleport"), "{e}");
}

fn shape() -> ResponseShape {
    let mut shape = ResponseShape::new("coder");
    shape.custom_tools = vec!["apply_patch".into()];
    shape
}

#[test]
fn a_whole_chat_answer_becomes_a_response() {
    let completion = json!({
        "id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "On it.", "reasoning_content": "think",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}},
            ],
        }}],
    });
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        ..Usage::default()
    };
    let shape = shape();
    let finished = answer::whole(completion.to_string().as_bytes(), &usage, &shape).unwrap();
    let r = &finished.response;
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "coder");
    let kinds: Vec<&str> = r["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "custom_tool_call"]
    );
    assert_eq!(r["output"][1]["content"][0]["text"], "On it.");
    assert_eq!(r["output"][2]["arguments"], "{\"cmd\":\"ls\"}");
    assert_eq!(r["output"][3]["input"], "*** Begin Patch");
    assert_eq!(r["usage"]["input_tokens"], 10);
    assert_eq!(r["usage"]["output_tokens"], 5);
    // What the store adds to the chain: the assistant turn with both calls.
    assert_eq!(finished.output_messages.len(), 1);
    assert_eq!(
        finished.output_messages[0]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let cut = json!({"choices": [{"finish_reason": "length", "message": {"content": "part"}}]});
    let finished = answer::whole(cut.to_string().as_bytes(), &usage, &shape).unwrap();
    assert_eq!(finished.response["status"], "incomplete");
    assert_eq!(
        finished.response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

fn chunk(delta: Value, finish: Option<&str>) -> Frame {
    Frame::new(
        json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        true,
    )
}

#[test]
fn a_chat_stream_becomes_the_responses_event_sequence() {
    let mut encoder = ResponsesEncoder::new(shape());
    let mut out = BytesMut::new();
    let mut usage = Frame::new(json!({"choices": []}).to_string(), false);
    usage.usage = Some(Usage {
        prompt_tokens: 7,
        completion_tokens: 3,
        total_tokens: 10,
        ..Usage::default()
    });
    for frame in [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hi "}), None),
        chunk(json!({"content": "there"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "exec_command", "arguments": "{\"cmd\""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":\"ls\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        usage,
        Frame::done(),
    ] {
        encoder.frame(&frame, &mut out);
    }
    let finished = encoder.take_finished().expect("finished at [DONE]");
    out.extend_from_slice(&encoder.take_final_event().unwrap());
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let sequence: Vec<u64> = got
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..got.len() as u64).collect::<Vec<_>>());
    let completed = &got.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(completed["output"][1]["arguments"], "{\"cmd\":\"ls\"}");
    assert_eq!(completed["output"][1]["call_id"], "call_a");
    assert_eq!(completed["usage"]["output_tokens"], 3);
    assert_eq!(finished.response, *completed);
}
