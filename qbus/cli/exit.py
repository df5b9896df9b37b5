"""How the ``qbus`` command ends: one error prefix and one table of exit codes.

Every command's failure is printed as ``error: <what happened>`` on stderr (a usage
error first shows the command's usage line) and ends with a code a script can branch
on (docs/operations.md, "Exit codes"):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done
1     the input or the job failed: a syntax error in the program, a rejected or
      failed job, a check that did not pass, any other error while working
2     usage or configuration: an unknown option, a bad value, a bad config file
      or environment variable (nothing was sent)
3     the bus cannot be reached (no server at the URL, or it refused the login)
4     timed out waiting for an answer (the job may still finish: ``qbus status``)
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import sys
from typing import Any

import click

from qbus.errors import BusUnreachableError, ConfigError, QbusError

__all__ = ["EXIT_CODES", "QbusGroup", "TimedOut"]

EXIT_CODES = {
    "ok": 0,
    "failed": 1,
    "usage": 2,
    "unreachable": 3,
    "timeout": 4,
    "interrupted": 130,
}


class TimedOut(click.ClickException):
    """An answer did not come in time (exit code 4)."""

    exit_code = EXIT_CODES["timeout"]


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def exit_code_of(exc: BaseException) -> int:
    """The exit code for an exception that ends a command (see the module docstring)."""
    if isinstance(exc, BusUnreachableError):
        return EXIT_CODES["unreachable"]
    if isinstance(exc, ConfigError):
        return EXIT_CODES["usage"]
    if isinstance(exc, click.UsageError):
        return EXIT_CODES["usage"]
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_CODES["failed"]


class QbusGroup(click.Group):
    """A click group whose commands end with the prefix and codes of this module.

    Both the ``qbus`` script and click's test runner call ``main``, so both see the
    same messages and codes.
    """

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        extra["standalone_mode"] = False
        try:
            result = super().main(args, prog_name, **extra)
        except click.UsageError as exc:
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
                click.echo(
                    f"Try '{exc.ctx.command_path} {exc.ctx.help_option_names[0]}' for help.",
                    err=True,
                )
            _error(exc.format_message())
            sys.exit(exit_code_of(exc))
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exit_code_of(exc))
        except click.Abort:
            _error("interrupted")
            sys.exit(EXIT_CODES["interrupted"])
        except BusUnreachableError as exc:
            # The hint is the command line's: a library caller has no `qbus up` or --url.
            _error(f"{exc}; start one with 'qbus up' or pass --url (or set QBUS_URL)")
            sys.exit(exit_code_of(exc))
        except QbusError as exc:
            _error(str(exc))
            sys.exit(exit_code_of(exc))
        # click returns the exit code of a ctx.exit(code) when not standalone.
        sys.exit(result if isinstance(result, int) else 0)
