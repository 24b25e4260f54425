"""The official `openai` SDK using Claude and Gemini models through the gateway, which
translates to Anthropic's Messages API and Gemini's generateContent (mock upstreams speaking
their real wire formats)."""
import json

import openai
import pytest

MODELS = ["claude-haiku-3-5", "gemini-2.5-flash"]

WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key="dev-key-12345", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_plain_chat(client, model):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello from the sdk"}]
    )
    assert r.choices[0].message.content == "hello from the sdk"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
def test_streaming_chat_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "grüße aus köln ✓"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "grüße aus köln ✓"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("model", MODELS)
def test_tool_calling_round_trip(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=WEATHER)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
    second = client.chat.completions.create(model=model, messages=messages, tools=WEATHER)
    assert second.choices[0].message.content.startswith("Result: ")
    assert "18" in second.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call(client, model):
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather?"}], tools=WEATHER, stream=True
    )
    calls = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for tc in choice.delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = tc.id or entry["id"]
            if tc.function:
                entry["name"] = tc.function.name or entry["name"]
                entry["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_inexpressible_parameters_are_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude-haiku-3-5", messages=[{"role": "user", "content": "x"}], n=2)
    assert "n > 1" in e.value.message
