import time

from workflows.definition import MAX_CALL_TOKENS, MockSpec
from workflows.providers import CompletionRequest, get_provider


def request(**overrides) -> CompletionRequest:
    fields = {"model": "gpt-4o", "system_prompt": "Be brief.", "prompt": "Summarise budgets.", "max_tokens": 100}
    return CompletionRequest(**{**fields, **overrides})


def test_input_tokens_are_a_quarter_of_the_prompt_characters_rounded_up():
    result = get_provider("fake").complete(request())
    assert result.input_tokens == 7  # 27 characters


def test_mock_output_and_tokens_are_answered_as_given():
    result = get_provider("fake").complete(request(options={"mock": {"output": {"x": 1}, "output_tokens": 42}}))
    assert (result.output, result.output_tokens) == ({"x": 1}, 42)


def test_output_tokens_stop_at_max_tokens_as_a_real_model_would():
    result = get_provider("fake").complete(request(max_tokens=50, options={"mock": {"output_tokens": 80}}))
    assert result.output_tokens == 50


def test_mock_input_tokens_replace_the_count_as_a_provider_with_a_greedier_tokenizer_would():
    result = get_provider("fake").complete(request(options={"mock": {"input_tokens": 5000, "output_tokens": 80}}))
    assert (result.input_tokens, result.output_tokens) == (5000, 80)


def test_output_is_synthesised_from_the_schema_and_its_tokens_counted():
    schema = {"title": {"type": "string"}, "score": {"type": "number"}, "tags": {"type": "array"}}
    result = get_provider("fake").complete(request(output_schema=schema))
    assert result.output == {"title": "fake title", "score": 0, "tags": []}
    assert result.output_tokens == 12  # len('{"title": "fake title", "score": 0, "tags": []}') / 4, rounded up


def test_latency_is_simulated():
    started = time.monotonic()
    get_provider("fake").complete(request(options={"mock": {"latency_ms": 200}}))
    assert time.monotonic() - started >= 0.2


def test_mock_counts_from_a_definition_stored_before_the_bound_are_bounded():
    """The fake never reports more than the step's estimate counts: MAX_CALL_TOKENS of input, max_tokens of output."""
    stored = MockSpec.from_dict({"output": None, "output_tokens": 3_000_000_000, "input_tokens": 3_000_000_000})
    result = get_provider("fake").complete(request(max_tokens=100, options={"mock": stored.to_dict()}))
    assert (result.input_tokens, result.output_tokens) == (MAX_CALL_TOKENS, 100)
