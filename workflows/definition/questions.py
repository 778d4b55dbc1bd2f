"""Conductor's questions: written in a definition, or read at run time from an agent's output, and
the output a person's answers make of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_QUESTIONS = 100
MAX_ANSWER_CHARS = 10_000
QUESTION_KEYS = ("id", "text", "hint", "choices", "allow_free_text", "default", "required", "multiline")
_DEFAULTS = {"hint": None, "choices": [], "allow_free_text": True, "default": None, "required": False, "multiline": True}
_TEXTS = ("id", "text", "hint", "default")
_FLAGS = ("allow_free_text", "required", "multiline")


def question_problems(entry: Mapping[str, Any], *, unknown_keys: bool = True) -> list[tuple[str, str]]:
    """(key, message) for each way `entry` is no question conductor would ask; unless
    `unknown_keys` is false, keys no question has are among them."""
    problems = [(key, "is not a field of a question") for key in entry if unknown_keys and key not in QUESTION_KEYS]
    if not isinstance(entry.get("text"), str) or not entry["text"].strip():
        problems.append(("text", "is required: the question"))
    for key in _TEXTS:
        if entry.get(key) is not None and not isinstance(entry[key], str):
            problems.append((key, "must be a string"))
    for key in _FLAGS:
        if entry.get(key) is not None and not isinstance(entry[key], bool):
            problems.append((key, "must be true or false"))
    choices = entry.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        problems.append(("choices", "must be a list of strings"))
    elif not choices and entry.get("allow_free_text") is False:
        problems.append(("choices", "are required when allow_free_text is false: nothing could answer it"))
    return problems


def question_of(entry: object, index: int) -> dict[str, Any]:
    """A question from an entry of a `source` list (text, or a mapping as written inline, with
    `question` standing for `text` as conductor allows); ValueError saying why it is none."""
    if isinstance(entry, str):
        entry = {"text": entry}
    if not isinstance(entry, Mapping):
        raise ValueError(f"question {index + 1} is {type(entry).__name__}, not text or a mapping")
    if "text" not in entry and "question" in entry:
        entry = {("text" if key == "question" else key): value for key, value in entry.items()}
    if problems := question_problems(entry):
        key, message = problems[0]
        raise ValueError(f"question {index + 1}: '{key}' {message}")
    return {**_DEFAULTS, **entry}


def numbered(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The questions with their answer keys: each its `id`, or q1..qN by position; ValueError on a repeat."""
    keyed, seen = [], set()
    for index, question in enumerate(questions):
        key = question.get("id") or f"q{index + 1}"
        if key in seen:
            raise ValueError(f"two questions have the id '{key}'")
        seen.add(key)
        keyed.append({**_DEFAULTS, **question, "id": key})
    return keyed


def answers_output(
    questions: list[dict[str, Any]], answers: Mapping[str, Any], *, may_skip: bool, aborted: bool
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Conductor's output for `answers` to `questions` (`{answers, items, transcript, ...}`), and
    (question id, message) for each answer that cannot be taken."""
    problems = [(str(key), "is not a question asked") for key in answers if key not in {q["id"] for q in questions}]
    items, answered, transcript = [], {}, []
    for number, question in enumerate(questions, 1):
        given = answers.get(question["id"])
        if given is None:
            if not aborted and question["required"]:
                problems.append((question["id"], "is required"))
            elif not aborted and not may_skip:
                problems.append((question["id"], "cannot be skipped"))
            answer, source = question["default"], "skipped" if question["default"] is None else "default"
        elif not isinstance(given, str) or len(given) > MAX_ANSWER_CHARS:
            problems.append((question["id"], f"must be text of at most {MAX_ANSWER_CHARS:,} characters"))
            continue
        elif question["choices"] and given not in question["choices"]:
            if not question["allow_free_text"]:
                problems.append((question["id"], f"must be one of {question['choices']}"))
            answer, source = given, "free_text"
        else:
            answer, source = given, "choice" if question["choices"] else "free_text"
        items.append(
            {"id": question["id"], "question": question["text"], "answer": answer, "source": source, "skipped": source == "skipped"}
        )
        if source != "skipped":
            answered[question["id"]] = answer
            transcript.append(f"Q{number}. {question['text']}\nA: {answer}")
    output = {
        "answers": answered,
        "items": items,
        "transcript": "\n\n".join(transcript),
        "answered_count": len(answered),
        "skipped_count": sum(item["skipped"] for item in items),
        "answered_any": bool(answered),
        "outcome": "aborted" if aborted else "completed",
    }
    return output, problems
