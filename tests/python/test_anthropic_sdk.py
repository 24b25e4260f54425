"""The official `anthropic` SDK against the real gateway binary (`/v1/messages`), to an
Anthropic target (passed through) and to OpenAI-compatible and Gemini targets (translated);
the mocks behind speak each provider's real wire format. The SDK's own stream accumulator is
the oracle for event order and content."""
import anthropic
import pytest

MODELS = ["claude-haiku-3-5", "llama3.2:1b", "gemini-2.5-flash"]

WEATHER = [{
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


@pytest.fixture
def client(gateway):
    # The SDK wants the route's base (it appends /v1/messages itself).
    return anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key="dev-key-12345", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_whole_message(client, model):
    m = client.messages.create(
        model=model, max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "hello from the sdk"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "hello from the sdk"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == 4 and m.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_streamed_message(client, model):
    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "grüße aus köln ✓"}],
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "message_delta" in events
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "grüße aus köln ✓"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


def run_turn(client, model, messages, stream):
    if not stream:
        return client.messages.create(model=model, max_tokens=200, tools=WEATHER, messages=messages)
    with client.messages.stream(model=model, max_tokens=200, tools=WEATHER, messages=messages) as s:
        return s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_use_over_several_turns(client, model, stream):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    for round_ in range(2):
        first = run_turn(client, model, messages, stream)
        assert first.stop_reason == "tool_use", first
        uses = [b for b in first.content if b.type == "tool_use"]
        assert len(uses) == 1
        assert uses[0].name == "get_weather" and uses[0].input == {"city": "Paris"}
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": f"sunny, round {round_}"},
        ]})
        second = run_turn(client, model, messages, stream)
        assert second.stop_reason == "end_turn"
        text = "".join(b.text for b in second.content if b.type == "text")
        assert "sunny, round" in text, text
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in second.content]})
        messages.append({"role": "user", "content": "And tomorrow?"})


def test_bearer_token_and_count_tokens_and_models(gateway):
    client = anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), auth_token="dev-key-12345", max_retries=0)
    m = client.messages.create(model="llama3.2:1b", max_tokens=20, messages=[{"role": "user", "content": "bearer works"}])
    assert m.content[0].text == "bearer works"
    counted = client.messages.count_tokens(
        model="llama3.2:1b", system="You are helpful.", tools=WEATHER,
        messages=[{"role": "user", "content": "How many tokens is this?"}],
    )
    assert counted.input_tokens > 10
    counted = client.messages.count_tokens(model="claude-haiku-3-5", messages=[{"role": "user", "content": "one two three"}])
    assert counted.input_tokens == 3
    ids = [m.id for m in client.models.list()]
    assert "claude-haiku-3-5" in ids and "llama3.2:1b" in ids and "gemma3:1b" not in ids


def test_errors_are_the_sdks_typed_errors(gateway):
    base = gateway.removesuffix("/v1")
    bad = anthropic.Anthropic(base_url=base, api_key="wrong-key-000000", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="llama3.2:1b", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    client = anthropic.Anthropic(base_url=base, api_key="dev-key-12345", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client.messages.create(model="gemma3:1b", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "gemma3:1b" in str(e.value)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="llama3.2:1b", max_tokens=5, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "web_search_20250305" in str(e.value)
