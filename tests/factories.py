import factory

from workflows.models import Team
from workflows.services.workflows import workflow_create

THREE_STEP_YAML = """
workflow:
  name: research-pipeline
  description: Three agents, each costing exactly $0.30 on the fake provider.
  entry_point: researcher
  input:
    topic: {type: string, required: true}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 300}
agents:
  - name: researcher
    prompt: "Research {{ workflow.input.topic }}."
    output: {findings: {type: string}}
    mock: {output: {findings: "three facts"}, output_tokens: 1000}
    routes: [{to: writer}]
  - name: writer
    prompt: "Write about {{ researcher.output.findings }}."
    output: {draft: {type: string}}
    mock: {output: {draft: "a draft"}, output_tokens: 1000}
    routes: [{to: reviewer}]
  - name: reviewer
    prompt: "Review {{ writer.output.draft }}."
    output: {approved: {type: boolean}}
    mock: {output: {approved: true}, output_tokens: 1000}
    routes:
      - {to: $end, when: "{{ reviewer.output.approved }}"}
      - {to: writer}
output:
  draft: "{{ writer.output.draft }}"
  approved: "{{ reviewer.output.approved }}"
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
    mock: {output_tokens: 100, latency_ms: 1200}
    routes: [{to: second}]
  - name: second
    prompt: "And again."
    mock: {output_tokens: 100, latency_ms: 1200}
"""


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"team-{n}")


def workflow_version(*, team: Team, source: str = THREE_STEP_YAML, name: str | None = None):
    return workflow_create(team=team, definition=source, name=name)
