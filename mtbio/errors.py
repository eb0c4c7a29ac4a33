"""The error types mtbio raises for problems of the user's input or environment (not bugs).

The command line prints these as one line (``mtbio COMMAND: error: ...``, exit 1) and lets every other exception
through with its traceback, so a real defect is never disguised as a user error. Value problems are ``ValueError``
subclasses (:class:`mtbio.data.errors.VolumeError`, :class:`mtbio.networks.weights.WeightsError`, ...), file
problems ``OSError`` ones (``FileNotFoundError``, ``FileExistsError``); the rest derive from :class:`UserError`.
"""

from __future__ import annotations

__all__ = ["MissingDependencyError", "USER_ERRORS", "UserError"]


class UserError(Exception):
    """Mixin of the errors that are about the user's input or environment (a locked store, an incomplete store,
    a missing optional dependency), whatever their builtin base."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency (an extra such as ``mtbio[export]``) is not installed; the message says what to
    install."""


#: what the command line reports as one line
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, UserError)
