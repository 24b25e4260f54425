"""The official `openai` SDK's Responses client against the real gateway binary
(`/v1/responses`): to a server that serves the Responses API (passed through), and to
Anthropic, Gemini and chat-only (Ollama-like) targets (translated). The SDK's typed events
and its stream accumulator are the oracle."""
import json

import openai
import pytest

NATIVE = "gpt-5-mini"
MODELS = [NATIVE, "claude-haiku-3-5", "gemini-2.5-flash", "llama3.2:1b"]

WEATHER = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key="dev-key-12345", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_whole_response(client, model):
    r = client.responses.create(model=model, instructions="Be brief.", input="hello from the sdk")
    assert r.object == "response" and r.status == "completed"
    assert r.output_text == "hello from the sdk"
    assert r.usage.output_tokens == 4 and r.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_streamed_response(client, model):
    with client.responses.stream(model=model, input=[{"role": "user", "content": "grüße aus köln ✓"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events and "response.output_item.done" in events
    assert final.output_text == "grüße aus köln ✓"
    assert final.usage.output_tokens == 4


def turn(client, model, items, stream):
    if not stream:
        return client.responses.create(model=model, tools=WEATHER, input=items)
    with client.responses.stream(model=model, tools=WEATHER, input=items) as s:
        return s.get_final_response()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_calls_over_several_turns(client, model, stream):
    items = [{"role": "user", "content": "What is the weather in Paris?"}]
    for round_ in range(2):
        first = turn(client, model, items, stream)
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 1, first.output
        assert calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
        items += [o.model_dump(exclude_none=True) for o in first.output]
        items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": f"sunny, round {round_}"})
        second = turn(client, model, items, stream)
        assert f"sunny, round {round_}" in second.output_text
        items += [o.model_dump(exclude_none=True) for o in second.output]
        items.append({"role": "user", "content": "And tomorrow?"})


@pytest.mark.parametrize("model", MODELS)
def test_chained_by_previous_response_id(client, model):
    first = client.responses.create(model=model, input="one two three")
    second = client.responses.create(model=model, input="four", previous_response_id=first.id)
    assert second.output_text == "four"
    # The chain's earlier turns were part of the prompt.
    assert second.usage.input_tokens > first.usage.input_tokens


def test_kept_responses_can_be_read_deleted_and_store_false_is_honoured(client):
    model = "llama3.2:1b"
    r = client.responses.create(model=model, input="keep me")
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "keep me"
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    unkept = client.responses.create(model=model, input="forget me", store=False)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model, input="again", previous_response_id=unkept.id)
    assert "not found" in str(e.value)


def test_input_tokens_are_counted(client):
    for model in [NATIVE, "llama3.2:1b"]:
        counted = client.responses.input_tokens.count(model=model, input="How many tokens is this sentence?", tools=WEATHER)
        assert counted.input_tokens > 5


def test_what_a_chat_target_cannot_do_is_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2:1b", input=[{"type": "item_reference", "id": "x"}])
    assert "item_reference" in str(e.value)
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="gemma3:1b", input="x")
