"""Per-token billing: queries, load tests and comparisons against an Azure endpoint need ``confirm=True`` and a
stated request cap; anything less sends nothing. Local endpoints need neither."""

from __future__ import annotations

import pytest
from test_azure_deployment import KEY, SCORING, FakeFoundry
from test_azure_guard import NOT_A_BOOL

from phi3lab.endpoints import AzureEndpoint, EndpointError, LocalEndpoint, compare_endpoints, load_test, query_endpoint
from phi3lab.monitoring import CallLog

PROMPTS = ["What is LoRA?", "Name a colour."]
UNREACHABLE = LocalEndpoint("http://127.0.0.1:9", timeout=2)

# Every call billed per token, with the number of Azure requests it sends, called the way a learner would.
BILLED_PER_TOKEN = {
    "query (evaluation against references)": (2, lambda azure, log, **guard: query_endpoint(
        azure, PROMPTS, max_tokens=4, log=log, **guard)),
    "load test": (3, lambda azure, log, **guard: load_test(
        azure, PROMPTS, concurrency=2, requests=3, max_tokens=4, log=log, **guard)),
    "compare with the local endpoint": (2, lambda azure, log, **guard: compare_endpoints(
        [UNREACHABLE, azure], PROMPTS, max_tokens=4, log=log, **guard)),
}


@pytest.fixture
def fake():
    return FakeFoundry()


@pytest.fixture
def log(tmp_path):
    return CallLog(tmp_path / "calls.jsonl")


def _call(fake, log, action: str, **guard):
    azure = AzureEndpoint(SCORING, KEY, name="azure", transport=fake.transport)
    return BILLED_PER_TOKEN[action][1](azure, log, **guard)


def _nothing_sent(fake, log) -> bool:
    # The call log records every attempt, the local endpoint's too: a comparison must not start with it.
    return fake.transport.requests == [] and log.records == []


@pytest.mark.parametrize("value", NOT_A_BOOL, ids=[repr(v)[:20] for v in NOT_A_BOOL])
@pytest.mark.parametrize("action", BILLED_PER_TOKEN)
def test_anything_but_a_bool_is_a_type_error_and_sends_nothing(fake, log, action, value):
    with pytest.raises(TypeError, match=r"confirm must be True .* or False"):
        _call(fake, log, action, confirm=value, max_requests=10)
    assert _nothing_sent(fake, log)


@pytest.mark.parametrize("value", [False, None])
@pytest.mark.parametrize("action", BILLED_PER_TOKEN)
def test_without_confirmation_nothing_is_sent_and_the_fix_is_named(fake, log, action, value):
    requests = BILLED_PER_TOKEN[action][0]
    with pytest.raises(EndpointError, match=rf"billed per token.*confirm=True and max_requests={requests}"):
        _call(fake, log, action, confirm=value, max_requests=10)
    assert _nothing_sent(fake, log)


@pytest.mark.parametrize("cap", [None, 0, -1, True, "10", 2.0])
@pytest.mark.parametrize("action", BILLED_PER_TOKEN)
def test_a_confirmed_call_needs_a_stated_whole_number_cap(fake, log, action, cap):
    with pytest.raises(EndpointError, match="max_requests=N"):
        _call(fake, log, action, confirm=True, max_requests=cap)
    assert _nothing_sent(fake, log)


@pytest.mark.parametrize("action", BILLED_PER_TOKEN)
def test_more_requests_than_the_cap_sends_none(fake, log, action):
    requests = BILLED_PER_TOKEN[action][0]
    with pytest.raises(EndpointError, match=f"over your cap of max_requests={requests - 1}"):
        _call(fake, log, action, confirm=True, max_requests=requests - 1)
    assert _nothing_sent(fake, log)


@pytest.mark.parametrize("action", BILLED_PER_TOKEN)
def test_confirmed_within_the_cap_sends_exactly_the_requests(fake, log, action):
    requests = BILLED_PER_TOKEN[action][0]
    _call(fake, log, action, confirm=True, max_requests=requests)
    assert len(fake.transport.matching("POST", r"/chat/completions")) == requests


def test_local_endpoints_cost_nothing_and_need_no_confirmation():
    assert query_endpoint(UNREACHABLE, ["hi"], log=False).errors == 1
    assert load_test(UNREACHABLE, ["hi"], concurrency=1, requests=2, log=False).summary()["requests"] == 2
    with pytest.raises(TypeError, match="confirm must be True"):  # a typo is still a typo
        query_endpoint(UNREACHABLE, ["hi"], log=False, confirm="yes")
