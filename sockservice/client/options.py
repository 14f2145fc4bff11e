"""
What every C{sockservice} subcommand's options share: C{-h} is help, as in
nc, socat and every Twisted command, and C{--version} is sockservice's.
"""

import sys

from twisted.python import usage

from sockservice import __version__


class CommandOptions(usage.Options):
    def opt_version(self):
        """
        Display the sockservice version and exit.
        """
        print(f"sockservice {__version__}")
        sys.exit(0)

    opt_h = usage.Options.opt_help
