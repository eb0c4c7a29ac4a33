"""The command line prints the user's errors as one line and lets defects keep their traceback."""

from __future__ import annotations

import pytest

import mtbio.cli as cli
from mtbio.data.store import IncompletePredictionError
from mtbio.errors import USER_ERRORS, MissingDependencyError, UserError
from mtbio.inference.lock import StoreLockedError


def test_user_error_types():
    for err in (StoreLockedError, IncompletePredictionError, MissingDependencyError, FileNotFoundError, ValueError):
        assert issubclass(err, USER_ERRORS), err
    assert not issubclass(KeyError, USER_ERRORS) and not issubclass(RuntimeError, USER_ERRORS)
    assert issubclass(MissingDependencyError, ImportError) and issubclass(StoreLockedError, UserError)


@pytest.mark.parametrize("exc, one_line", [(ValueError("bad value"), True), (StoreLockedError("locked"), True),
                                           (RuntimeError("a defect"), False), (KeyError("k"), False)])  # fmt: skip
def test_cli_reports_user_errors_and_reraises_defects(monkeypatch, capsys, exc, one_line):
    def boom(args):
        raise exc

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.delenv("MTBIO_DEBUG", raising=False)
    parser.parse_args(["evaluate", "a", "b"])  # the sub-command exists
    parser._subparsers._group_actions[0].choices["evaluate"].set_defaults(func=boom)
    if one_line:
        assert cli.main(["evaluate", "a", "b"]) == 1
        assert capsys.readouterr().err.strip() == f"mtbio evaluate: error: {exc}"
    else:
        with pytest.raises(type(exc)):
            cli.main(["evaluate", "a", "b"])
