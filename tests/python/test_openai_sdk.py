"""The official `openai` Python SDK against the running gateway binary."""
import openai
import pytest


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway, api_key="dev-key-12345", max_retries=0)


def test_model_list_shows_only_the_callers_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["llama3.2:1b", "fail-500", "fail-429", "echo", "claude-haiku-3-5", "gemini-2.5-flash", "gpt-5-mini"]
    assert client.models.retrieve("llama3.2:1b").id == "llama3.2:1b"


def test_chat(client):
    r = client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "hello gateway"}])
    assert r.choices[0].message.content == "hello gateway"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 2


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "one two three ünïcödé"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three ünïcödé"
    assert all(c.choices for c in chunks), "no usage chunk unless asked for"


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b c"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_embeddings(client):
    r = client.embeddings.create(model="nomic-embed-text", input=["first text", "second"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 3
    assert r.usage.prompt_tokens == 3


def test_bad_key_is_an_authentication_error(gateway):
    bad = openai.OpenAI(base_url=gateway, api_key="wrong-key-123", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401


def test_forbidden_model_is_a_permission_error(client):
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="gemma3:1b", messages=[{"role": "user", "content": "x"}])
    assert "gemma3:1b" in e.value.message


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-unknown", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gemma3:1b")


def test_upstream_errors(client):
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fail-429", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="fail-500", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    assert "sk-upstream" not in str(e.value)


def test_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama3.2:1b", messages=[])
