"""Running the command line in-process and reading its error."""

from __future__ import annotations

from worker.cli import main


def one_error_line(capsys, argv: list[str]) -> str:
    """``sync-scorer ARGV`` fails (non-zero exit) with exactly one stderr line and no traceback;
    returns that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0, (argv, err)
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]
