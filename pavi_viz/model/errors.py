"""The one error type of the model layer.

Every problem found in a model (its plates, variables, expressions, data or
JSON file) is reported as a :class:`ModelError` that names its culprit, so that
the visual builder can show the message next to the faulty part and scripts can
catch one type.
"""

from __future__ import annotations


class ModelError(ValueError):
    """A problem with a plate-graph model, naming the part at fault.

    Args:
        message: what is wrong, in words a student understands.
        culprit: the name of the plate, variable or covariate at fault
            (``None`` when the problem concerns the model as a whole).
        problems: for an error that gathers several problems, each of them.
    """

    def __init__(
        self,
        message: str,
        culprit: str | None = None,
        problems: list[ModelError] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.culprit = culprit
        self.problems = problems if problems is not None else [self]

    @classmethod
    def gather(cls, problems: list[ModelError]) -> ModelError:
        """One error that lists every problem (the first one when alone)."""
        if len(problems) == 1:
            return problems[0]
        lines = "\n".join(f"  - {p.message}" for p in problems)
        return cls(f"the model has {len(problems)} problems:\n{lines}", problems=problems)
