"""The project's exception types. The CLI prints a :class:`KinjectError` as one line."""
from __future__ import annotations

__all__ = ["KinjectError", "ConfigError", "DataError", "ModelLoadError"]


class KinjectError(Exception):
    """A problem a user can fix: the message names what was wrong and what was expected."""


class ConfigError(KinjectError, ValueError):
    """Bad arguments or configuration (model_args, CLI flags, preset files)."""


class DataError(KinjectError, ValueError):
    """A data file or directory that does not hold what was expected (names file and line)."""


class ModelLoadError(KinjectError, OSError):
    """A model that cannot be found or loaded in this environment."""


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
