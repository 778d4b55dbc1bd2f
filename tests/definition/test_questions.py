"""Conductor's questions read from a model's output, and the output a person's answers make."""

import pytest

from workflows.definition.questions import answers_output, numbered, question_of

QUESTIONS = numbered(
    [
        question_of("Which region?", 0),
        question_of({"question": "Which store?", "choices": ["redis", "memcached"], "allow_free_text": False}, 1),
        question_of({"id": "owner", "text": "Who owns it?", "default": "platform"}, 2),
    ]
)


def test_entries_become_questions_keyed_by_position_or_id():
    assert [(q["id"], q["text"], q["choices"]) for q in QUESTIONS] == [
        ("q1", "Which region?", []),
        ("q2", "Which store?", ["redis", "memcached"]),
        ("owner", "Who owns it?", []),
    ]


@pytest.mark.parametrize(("entry", "message"), [(7, "not text or a mapping"), ({"choices": ["a"]}, "'text' is required"), ({"text": "a", "colour": "red"}, "'colour'")])
def test_an_entry_that_is_no_question_is_refused_naming_it(entry, message):
    with pytest.raises(ValueError, match=message):
        question_of(entry, 0)


def test_a_skipped_question_takes_its_default_and_the_transcript_holds_what_was_answered():
    output, problems = answers_output(QUESTIONS, {"q2": "redis"}, may_skip=True, aborted=False)

    assert problems == []
    assert output["answers"] == {"q2": "redis", "owner": "platform"}
    assert [(i["id"], i["source"], i["skipped"]) for i in output["items"]] == [
        ("q1", "skipped", True),
        ("q2", "choice", False),
        ("owner", "default", False),
    ]
    assert output["transcript"] == "Q2. Which store?\nA: redis\n\nQ3. Who owns it?\nA: platform"
    assert (output["answered_count"], output["skipped_count"], output["answered_any"]) == (2, 1, True)


def test_answers_that_cannot_be_taken_are_each_named():
    _, problems = answers_output(QUESTIONS, {"q2": "etcd", "q7": "x"}, may_skip=False, aborted=False)

    assert dict(problems) == {
        "q7": "is not a question asked",
        "q1": "cannot be skipped",
        "q2": "must be one of ['redis', 'memcached']",
        "owner": "cannot be skipped",  # a default stands in for a skipped answer, and skipping is off
    }


def test_an_abandoned_step_keeps_what_was_answered():
    output, problems = answers_output(QUESTIONS, {"q1": "eu"}, may_skip=False, aborted=True)

    assert problems == [] and output["outcome"] == "aborted" and output["answers"]["q1"] == "eu"
