"""
The server's configuration as one typed, frozen value, and the TOML config
file it can come from.

L{Config} is what C{twistd sockservice} options resolve to: makeService
builds the service from it and a reload compares the running one with a new
one field by field. Each field is the long option of the same name in
camelCase (C{max-line} is C{maxLine}), so an option is one line in
L{sockservice.tap.Options} plus one field here.
"""

import re
import tomllib
from dataclasses import dataclass, fields
from typing import Optional

from twisted.python import usage

from sockservice.hubs.redisurl import RedisAddress


def fieldName(option):
    """
    The L{Config} field of a long option, its name in camelCase
    (C{idle-timeout} is C{idleTimeout}) unless L{FIELD_NAMES} says otherwise.
    """
    if option in FIELD_NAMES:
        return FIELD_NAMES[option]
    first, *rest = option.split("-")
    return first + "".join(word.capitalize() for word in rest)


#: Options whose field name is not their plain camelCase.
FIELD_NAMES = {"max-per-ip": "maxPerIP", "config": "configFile"}
#: Fields that options resolve to under another name (given to
#: L{Config.fromOptions} by name): the option each comes from.
RESOLVED = {"endpoints": "listen", "backplaneAddress": "backplane", "token": "token-file"}


def optionName(field):
    """
    The long option behind L{Config} field C{field}, for logs.
    """
    for option, name in FIELD_NAMES.items():
        if name == field:
            return option
    return RESOLVED.get(field) or re.sub("[A-Z]", lambda m: "-" + m.group().lower(), field)


@dataclass(frozen=True)
class Config:
    """
    Everything C{twistd sockservice} was told, checked and resolved: the
    texts as the bytes sent, the endpoints as strings for
    L{twisted.internet.endpoints.serverFromString}, the token file's token,
    the backplane URL as its L{RedisAddress}.

    @ivar argv: the command line it came from, so a reload can read the
        config file again under the same command line.
    """

    mode: str = "greet"
    endpoints: tuple = ("tcp:12345:interface=0.0.0.0",)
    greeting: bytes = b"connect\n"
    ack: bytes = b"Information Received\n"
    count: int = 5
    maxLine: int = 65536
    drainTimeout: int = 10
    idleTimeout: int = 300
    maxConnections: int = 10000
    maxPerIP: int = 0
    maxBuffer: int = 1 << 20
    backlog: int = 1024
    token: Optional[bytes] = None
    tokenFile: Optional[str] = None
    logMessages: bool = False
    backplaneAddress: Optional[RedisAddress] = None
    channel: Optional[str] = None
    backplaneOutbox: Optional[int] = None
    backplaneRetain: Optional[int] = None
    history: int = 0
    websocket: tuple = ()
    websocketOrigin: tuple = ()
    metrics: Optional[str] = None
    logFormat: str = "text"
    configFile: Optional[str] = None
    argv: tuple = ()

    @classmethod
    def fromOptions(cls, values, **resolved):
        """
        The config from parsed option C{values} (long option name -> value),
        with the C{resolved} fields given by name instead.
        """
        names = {f.name for f in fields(cls)}
        given = {fieldName(option): value for option, value in values.items()
                 if fieldName(option) in names}
        given.update(resolved)
        return cls(**given)

    def changes(self, other):
        """
        The names of the fields whose value differs in C{other}, in field
        order.
        """
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def readConfigFile(path):
    """
    The table in the TOML file at C{path}.

    @raise usage.UsageError: naming the file, when it cannot be read or is
        not TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"cannot read --config {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"{path}: not valid TOML: {e}") from None


def fileError(path, key, problem):
    """
    A usage error naming the config file, the key and the problem (without
    the C{--key} the same problem names on the command line).
    """
    problem = problem.removeprefix(f"--{key} ")
    return usage.UsageError(f"{path}: {key}: {problem}")
