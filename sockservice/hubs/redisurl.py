"""
What C{--backplane} needs, known without importing the Redis client (which
installs the global reactor): its URL,
C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]} or C{rediss://} for Redis
over TLS; whether the client is installed; the stream's default length.
"""

from importlib.util import find_spec
from typing import NamedTuple, Optional
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss")
#: Entries kept in the stream, about (C{XADD MAXLEN ~}).
RETAIN = 100000
#: The extra that installs the Redis client.
EXTRA = "pip install 'sockservice[redis]'"


def redisClientInstalled():
    """
    Whether txredisapi, the Redis client, can be imported.
    """
    try:
        return find_spec("txredisapi") is not None
    except ValueError:
        # sys.modules maps it to None: importing it fails.
        return False


class RedisAddress(NamedTuple):
    host: str
    port: int
    password: Optional[str] = None
    username: Optional[str] = None
    db: Optional[int] = None
    tls: bool = False

    def __str__(self):
        """
        The URL without its password, for logs and errors.
        """
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        db = "" if self.db is None else f"/{self.db}"
        return f"{scheme}://{host}:{self.port}{db}"


def parseRedisURL(url):
    """
    The L{RedisAddress} in C{url}; L{ValueError} saying what is wrong (and
    never showing the password) if there is none.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"--backplane: {e}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            "--backplane must be a redis:// or rediss:// URL, "
            "such as redis://:PASSWORD@127.0.0.1:6379/0"
        )
    if not parts.hostname:
        raise ValueError("--backplane URL has no host")
    if parts.query or parts.fragment:
        raise ValueError("--backplane URL takes no ?query or #fragment")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"--backplane database must be a number, not {path!r}")
    return RedisAddress(
        host=parts.hostname,
        port=6379 if port is None else port,
        password=None if parts.password is None else unquote(parts.password),
        username=unquote(parts.username) if parts.username else None,
        db=int(path) if path else None,
        tls=parts.scheme == "rediss",
    )
