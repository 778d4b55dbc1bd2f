import time

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
