"""
Access control for relay: a shared token that a client's first line must
match before it may send or receive anything.
"""

import hmac

from sockservice.wire.lines import stripLineEnding

UNAUTHORIZED = b"ERROR unauthorized\n"


class TokenGate:
    """
    Admits a client whose first line (without its line ending) is the token.
    """

    def __init__(self, token):
        self.token = token

    @classmethod
    def fromFile(cls, path):
        """
        The gate for the token on the first line of the file at C{path}.

        @raise ValueError: naming the file, if it cannot be read or its first
            line is empty.
        """
        try:
            with open(path, "rb") as f:
                token = stripLineEnding(f.readline())
        except OSError as e:
            raise ValueError(f"cannot read --token-file {path!r}: {e.strerror}") from None
        if not token:
            raise ValueError(f"--token-file {path!r} has no token on its first line")
        return cls(token)

    def admits(self, line):
        """
        Whether C{line} carries the token; compared in constant time.
        """
        return hmac.compare_digest(stripLineEnding(line), self.token)
