"""The step engine: one attempt at a step from gate to settlement (`execute`), preparing its request
(`prepare`), and where the run goes next (`progression`). docs/architecture.md draws it."""

from workflows.services.steps.execute import (
    step_begin,
    step_execute,
    step_fail,
    step_provider_failed,
    step_settle,
)
from workflows.services.steps.kinds import PreparedStep, StepAttempt
from workflows.services.steps.prepare import step_prepare
from workflows.services.steps.progression import step_enter, steps_reopen

__all__ = [
    "PreparedStep",
    "StepAttempt",
    "step_begin",
    "step_enter",
    "step_execute",
    "step_fail",
    "step_prepare",
    "step_provider_failed",
    "step_settle",
    "steps_reopen",
]
