"""The endpoint client's pure parts: prompts to messages, references, sizes by profile, input errors."""

from __future__ import annotations

import pytest

from phi3lab.endpoints import (
    NO_KEY,
    AzureEndpoint,
    EndpointError,
    LocalEndpoint,
    QueryReport,
    as_messages,
    load_test,
    sample_conversations,
    sizes,
)


def test_a_string_becomes_a_user_message_after_an_optional_system_prompt():
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    assert as_messages("hi", system="be brief")[0] == {"role": "system", "content": "be brief"}


def test_a_dataset_conversation_loses_its_reference_answer():
    conversation = sample_conversations(1)[0]
    assert [m["role"] for m in as_messages(conversation)] == ["system", "user"]


@pytest.mark.parametrize("bad", [42, [], [{"role": "user"}], ["text"]])
def test_bad_prompts_are_named(bad):
    with pytest.raises(EndpointError, match="a prompt must be"):
        as_messages(bad)


def test_ci_profile_shrinks_the_defaults(monkeypatch):
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    assert sizes()["requests"] < 50
    monkeypatch.delenv("PHI3LAB_PROFILE")
    assert (sizes()["concurrency"], sizes()["requests"]) == (8, 50)


def test_load_test_refuses_an_empty_prompt_list():
    with pytest.raises(EndpointError, match="at least one prompt"):
        load_test(LocalEndpoint("http://127.0.0.1:9"), [], log=False)


def test_the_key_never_shows_in_repr():
    endpoint = AzureEndpoint("https://e.eastus2.models.ai.azure.com", "secret-key-value-123")
    assert "secret-key" not in repr(endpoint) and "secret-key" not in str(endpoint)


def test_an_empty_report_has_no_percentiles():
    report = QueryReport("local", [])
    assert report.p50 is None and report.summary()["requests"] == 0


def test_both_endpoints_use_the_openai_client_on_the_v1_route():
    with LocalEndpoint("http://127.0.0.1:8123/", api_key="k-local").client() as client:
        assert str(client.base_url) == "http://127.0.0.1:8123/v1/" and client.api_key == "k-local"
        assert client.max_retries == 0  # a load test must see every refusal of the local server
    with LocalEndpoint("http://127.0.0.1:8123").client() as client:
        assert client.api_key == NO_KEY  # the openai client needs one; a server without a key ignores it
    with AzureEndpoint("https://e.eastus2.models.ai.azure.com", "secret-key-value-123").client(4) as client:
        assert str(client.base_url) == "https://e.eastus2.models.ai.azure.com/v1/"
        assert client.max_retries == 2  # honours Retry-After on the endpoint's rate limit
