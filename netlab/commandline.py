"""
What every ``netlab`` command's options share: :class:`CommandOptions`.

Apart from :mod:`netlab.cli`, so that ``netlab bench`` parses its options the
same way without importing the clients (and, with them, ``logging``, whose
fork hooks can swallow the Ctrl-C that ends a run).
"""

from __future__ import annotations

import getopt
import sys
from typing import NoReturn

from twisted.python import usage

from netlab import __version__


class CommandOptions(usage.Options):
    """
    What every ``netlab`` command's options share: ``--version``, a usage
    line of the command's own, and options anywhere among the arguments
    (``netlab get URL -H 'X: y'``), as curl and GNU tools take them; ``--``
    ends the options, so an argument may start with ``-``.
    """

    #: The usage line(s) ``--help`` starts with.
    synopsis = "Usage: netlab COMMAND [options] ..."

    def getSynopsis(self) -> str:
        # Twisted would put the parent's synopsis before a subcommand's.
        return self.synopsis

    def opt_version(self) -> NoReturn:
        """
        Print netlab's version and exit.
        """
        sys.stdout.write(f"netlab {__version__}\n")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse ``options`` (default: ``sys.argv[1:]``), taking options after
        the arguments too; a command with subcommands stops at the first
        argument, its subcommand's name.
        """
        args = sys.argv[1:] if options is None else list(options)
        if not getattr(self, "subCommands", None):
            args = _options_first(args, self.shortOpt, self.longOpt)
        super().parseOptions(args)


def _options_first(args: list[str], short: str, long: list[str]) -> list[str]:
    """
    :return: ``args`` with every option (and its value) before ``--`` and
        the arguments, which ``usage.Options`` wants; ``getopt.gnu_getopt``
        knows from ``short`` and ``long`` which options take a value.
    """
    try:
        found, rest = getopt.gnu_getopt(args, short, long)
    except getopt.error as error:
        raise usage.UsageError(str(error)) from None
    ordered: list[str] = []
    for option, value in found:
        takes_value = (
            option[2:] + "=" in long
            if option.startswith("--")
            else option[1] + ":" in short
        )
        ordered += [option, value] if takes_value else [option]
    return [*ordered, "--", *rest]
