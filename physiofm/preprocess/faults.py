"""Which stage of preparing a record failed: preparers mark their steps, the build names the stage.

A preparer wraps each step in ``with stage("lead"):`` (``"transform"``, ``"quality"``); an exception
inside leaves it as a :class:`StageError` carrying the stage, so the build's fault boundary can turn
it into a reject that says where and why (``stage = "lead"``, ``reason = "KeyError: 'V7'"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StageError(Exception):
    """An exception raised in a named stage of preparing records."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.stage, self.error = stage, error


@contextmanager
def stage(name: str) -> Iterator[None]:
    try:
        yield
    except StageError:
        raise
    except Exception as error:
        raise StageError(name, error) from error


def describe(error: BaseException, default_stage: str) -> tuple[str, str]:
    """``(stage, reason)`` for a reject: the stage a :class:`StageError` names, else ``default_stage``."""
    if isinstance(error, StageError):
        return error.stage, str(error)
    return default_stage, f"{type(error).__name__}: {error}"
