"""
What the server's and the client's command lines share: option coercers that
name the option in their error, and usage errors as one line and status 2.
"""

import sys

from twisted.python import usage


def wholeNumber(name, low, high=None):
    """
    An option coercer accepting whole numbers in [low, high], naming the
    option in its error.
    """

    def coerce(value):
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low or (high is not None and number > high):
            bound = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise ValueError(f"--{name} must be a whole number {bound}, not {value!r}")
        return number

    coerce.coerceDoc = f"({low}-{high})" if high is not None else f"({low} or more)"
    # A config file gives it as a TOML integer.
    coerce.tomlType = int
    return coerce


class OneLineUsageErrors(usage.Options):
    """
    Options whose usage errors end the command with one line on stderr,
    C{COMMAND: problem (see COMMAND --help)}, and exit status 2, never a
    traceback.
    """

    def commandName(self):
        """
        The command as the user typed it, for the error line.
        """
        raise NotImplementedError()

    def parseOptions(self, options=None):
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            problem = str(e).removeprefix("Parameter type enforcement failed: ")
            command = self.commandName()
            sys.stderr.write(f"{command}: {problem} (see {command} --help)\n")
            raise SystemExit(2)
