from pathlib import Path

import factory

from workflows.models import Team
from workflows.services.workflows import workflow_create

# The README walks through the graduation path with this file, so the tests run it too.
THREE_STEP_YAML = (Path(__file__).resolve().parent.parent / "examples" / "research-pipeline.yaml").read_text()
# docs/workflows.md shows this one: a parallel group, then a for_each group with max_concurrent 2.
FAN_OUT_YAML = (Path(__file__).resolve().parent.parent / "examples" / "fan-out-review.yaml").read_text()

# Two agents on a model with no price at all: audit-only runs whose ledger entries carry no cost.
UNPRICED_YAML = """
workflow:
  name: unpriced
  entry_point: drafter
  runtime: {provider: fake, default_model: mystery-model, max_tokens: 500}
agents:
  - name: drafter
    prompt: "Draft it."
    routes: [{to: checker}]
  - name: checker
    prompt: "Check the draft."
    routes: [{to: $end}]
"""

LOOP_YAML = """
workflow:
  name: loop
  entry_point: thinker
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: thinker
    prompt: "Think again."
    mock: {output: {done: false}, output_tokens: 100}
    routes:
      - {to: $end, when: "thinker.output.done"}
      - {to: thinker}
"""

# Two steps that cost less than the gate reserves, through the fake provider's `mock`: max_tokens 100 at
# $1000 per 1M output tokens reserves $0.100000 a step; the first answers 40 tokens ($0.040000), the
# second 70 ($0.070000). (The fake never answers more than max_tokens; a step over its estimate is a
# CompletionResult given to step_settle, as tests/security/test_money_rules.py and the state machine do.)
UNDER_ESTIMATE_YAML = """
workflow:
  name: under-estimate
  entry_point: drafter
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 1000}
agents:
  - name: drafter
    prompt: "Draft it."
    mock: {output: {draft: "d"}, output_tokens: 40}
    routes: [{to: checker}]
  - name: checker
    prompt: "Check the draft."
    mock: {output: {ok: true}, output_tokens: 70}
"""

SLOW_YAML = """
workflow:
  name: slow
  entry_point: first
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: first
    prompt: "Take your time."
    mock: {output_tokens: 100, latency_ms: 2500}
    routes: [{to: second}]
  - name: second
    prompt: "And again."
    mock: {output_tokens: 100}
"""

SLOW_MIDDLE_TEMPLATE = """
workflow:
  name: slow-middle
  entry_point: first
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 1000}
agents:
  - name: first
    prompt: "One."
    mock: {output_tokens: 100}
    routes: [{to: middle}]
  - name: middle
    prompt: "Two, slowly."
    mock: {output_tokens: 100, latency_ms: {latency_ms}}
    routes: [{to: last}]
  - name: last
    prompt: "Three."
    mock: {output_tokens: 100}
"""


def slow_middle_yaml(*, latency_ms: int) -> str:
    """Three one-line agents whose middle step takes `latency_ms`: time to kill a worker during it."""
    return SLOW_MIDDLE_TEMPLATE.replace("{latency_ms}", str(latency_ms))


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"team-{n}")


def workflow_version(*, team: Team, source: str = THREE_STEP_YAML, name: str | None = None):
    return workflow_create(team=team, definition=source, name=name)
