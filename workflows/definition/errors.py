"""Errors raised by the definition package."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, located by a path like ``agents[2].routes[0].to``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DefinitionError(Exception):
    """A definition is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        details = "; ".join(str(problem) for problem in self.problems)
        super().__init__(f"invalid workflow definition ({count} {noun}): {details}")


class TemplateFailure(Exception):
    """A template or route expression failed while rendering or evaluating."""

    error_type = "TemplateError"  # what a step that fails with it records

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"template {where} failed: {reason}")


class NoRouteMatched(Exception):
    """An agent has routes but none of their conditions held."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        super().__init__(f"no route of agent '{agent}' matched")
