"""README.md's example blocks and tools/readme_examples.py, which writes them from a real run, cannot
drift apart: every block is well-formed, and shows the commands the generator runs for its step.
(The generator itself runs the service: `make readme-examples`.)"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def load_generator():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "tools" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


generator = load_generator()


def test_the_readme_has_one_well_formed_block_per_step_in_the_generators_order():
    assert list(generator.blocks(README)) == [step.name for step in generator.STEPS]


@pytest.mark.parametrize("step", generator.STEPS, ids=lambda step: step.name)
def test_each_block_shows_the_commands_the_generator_runs_and_one_output(step):
    body = generator.blocks(README)[step.name]
    curl, cli = generator.shown_commands(body)

    assert curl == (["\n".join(step.shown_commands())] if step.commands else [])
    # The CLI's examples are there once budgetsvc_client/cli is: merging the CLI without regenerating fails here.
    assert cli == (step.shown_cli() if generator.CLI_MODULE.is_file() else [])
    curl_part = body.partition(generator.CLI_LABEL)[0]
    fences = re.findall(r"^```(\w*)\n(.*?)\n```$", curl_part, re.S | re.M)
    outputs = [language for language, text in fences if language != "sh" and text.strip()]
    assert outputs == (["json"] if step.commands else [""])


def test_a_block_with_cli_examples_reads_back_as_its_steps_commands():
    """What the generator writes once budgetsvc_client/cli exists is what the test above reads."""
    for step in (step for step in generator.STEPS if step.cli):
        printed = [(command, "output") for command in step.shown_cli()]

        body = generator.render_block(step, "{}", printed)

        assert generator.shown_commands(body) == (["\n".join(step.shown_commands())], step.shown_cli())


def test_the_readme_names_no_path_of_a_particular_machine():
    assert not re.findall(r"(?<![\w.])/(?:work|home|tmp|Users|root|opt|srv)/\S*", README)


def test_the_readme_shows_the_screenshots_the_generator_saves():
    for image in ("spend.png", "run.png"):
        assert f"](docs/images/{image})" in README
        assert (ROOT / "docs" / "images" / image).read_bytes().startswith(b"\x89PNG")


def test_a_marker_without_its_partner_is_refused():
    with pytest.raises(ValueError, match="not closed"):
        generator.blocks("<!-- example: a -->\n<!-- example: b -->\nx\n<!-- /example -->\n")
    with pytest.raises(ValueError, match="no partner"):
        generator.blocks("<!-- example: a -->\nx\n")
    with pytest.raises(ValueError, match="two example blocks"):
        generator.blocks("<!-- example: a -->\n<!-- /example -->\n<!-- example: a -->\n<!-- /example -->\n")


def test_the_trimming_rule_keeps_the_named_fields_in_the_apis_order_and_marks_the_rest():
    run = {"id": 3, "status": "queued", "limits": {"budget_usd": "1.000000", "budget_mode": "enforce"}, "spent_usd": "0.3"}

    shown = generator.layout(run, generator.fields("status", "id", limits=generator.fields("budget_usd")))

    assert shown == '{"id":3,"status":"queued","limits":{"budget_usd":"1.000000", ...}, ...}'


def test_a_long_object_breaks_between_fields_within_the_width():
    page = {"next": None, "results": [{"agent": f"agent-{n}", "cost_usd": "0.300000", "detail": "x" * 40} for n in range(3)]}

    shown = generator.layout(page, generator.fields("next", results=generator.fields("agent", "cost_usd", "detail")))

    assert shown.splitlines()[0] == '{"next":null,"results":['
    assert len(shown.splitlines()) == 4
    assert all(len(line) <= generator.WIDTH for line in shown.splitlines())
