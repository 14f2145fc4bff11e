"""
The twistd plugin's options and service: C{twistd -n sockservice ...}.
"""

import ipaddress
import os
import select
import sys

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.reflect import fullyQualifiedName

from sockservice.commandline import OneLineUsageErrors, wholeNumber
from sockservice.hubs.local import LocalHub
from sockservice.hubs.outbox import OUTBOX_LIMIT
from sockservice.hubs.redisurl import parseRedisURL
from sockservice.logs.folding import FoldingLog
from sockservice.logs.formats import twistdLogger
from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.modes.relay import RelayFactory
from sockservice.service.draining import DrainingService
from sockservice.service.listening import ListeningService
from sockservice.service.notify import NotifyService
from sockservice.wire.auth import TokenGate
from sockservice.web.metrics import MetricsService, sharedPort
from sockservice.wire.limits import Limits, raiseOpenFileLimit

MODES = ("greet", "collect", "relay")
DEFAULT_GREETINGS = {"greet": "connect", "collect": "测试成功！", "relay": ""}
DEFAULT_CHANNEL = "sockservice:relay"
MODE_OPTIONS = {
    "ack": ("greet",),
    "count": ("collect",),
    "log-messages": ("relay",),
    "max-buffer": ("relay",),
    "token-file": ("relay",),
    "backplane": ("relay",),
    "channel": ("relay",),
    "backplane-outbox": ("relay",),
}


def _lineText(name, value):
    """
    Encode a greeting or ack as one UTF-8 line (with its LF).
    """
    if "\n" in value or "\r" in value:
        raise usage.UsageError(f"--{name} must be one line, without CR or LF")
    try:
        return value.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise usage.UsageError(f"--{name} is not valid UTF-8 text") from None


class Options(OneLineUsageErrors):
    """
    C{twistd sockservice} options. Usage errors end the command with one line
    on stderr and exit status 2, never a traceback.
    """

    synopsis = "[--mode greet|collect|relay] [--port 12345] [options]"
    longdesc = (
        "Serve the line protocols of the PHP socket tutorials: greet answers "
        "every line with an ack, collect takes one message from each of "
        "--count connections and exits, relay passes every line to every "
        "other client."
    )

    optParameters = [
        ["mode", "m", "greet", "greet, collect or relay."],
        ["port", "p", None, "TCP port to listen on, 0 for any free one [default: 12345]",
         wholeNumber("port", 0, 65535)],
        ["interface", "i", None,
         "Address to listen on [default: 0.0.0.0, every IPv4 address]."],
        ["greeting", None, None,
         "Line sent on connect; '' sends nothing "
         "[default: 'connect' in greet, '测试成功！' in collect, none in relay]."],
        ["ack", None, None,
         "greet: line sent for each line received [default: 'Information Received']."],
        ["count", None, None, "collect: connections to serve before exiting [default: 5]",
         wholeNumber("count", 1)],
        ["max-line", None, 65536, "Longest line accepted, in bytes",
         wholeNumber("max-line", 1)],
        ["drain-timeout", None, 10,
         "Seconds a stop lets connections flush and close before cutting them",
         wholeNumber("drain-timeout", 0)],
        ["idle-timeout", None, 300,
         "Seconds without a complete line from a client before it is closed; 0: never",
         wholeNumber("idle-timeout", 0)],
        ["max-connections", None, 10000, "Connections served at once",
         wholeNumber("max-connections", 1)],
        ["max-per-ip", None, 0, "Connections served at once from one address; 0: no limit",
         wholeNumber("max-per-ip", 0)],
        ["max-buffer", None, None,
         "relay: bytes queued for a client that does not read before it is dropped "
         "[default: 1048576]", wholeNumber("max-buffer", 1)],
        ["token-file", None, None,
         "relay: file whose first line clients must send before anything else."],
        ["backplane", None, None,
         "relay: relay across nodes through this Redis: "
         "redis://[:PASSWORD@]HOST:PORT[/DB], or rediss:// for TLS."],
        ["channel", None, None,
         f"relay: Redis pub/sub channel the nodes share [default: {DEFAULT_CHANNEL}]."],
        ["backplane-outbox", None, None,
         "relay: bytes held for Redis while it is away; lines beyond that "
         f"do not reach other nodes and are counted [default: {OUTBOX_LIMIT}]",
         wholeNumber("backplane-outbox", 0)],
        ["metrics", None, None,
         "Serve Prometheus metrics (/metrics) and a health check (/healthz) over "
         "HTTP on this server endpoint, such as tcp:9101:interface=127.0.0.1 "
         "[default: off]."],
        ["log-format", None, "text",
         "text, or json: one object per line on standard output (twistd -n)."],
    ]
    optFlags = [
        ["log-messages", None, "relay: log every relayed line (off: only connections)."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["listen"] = []

    def opt_listen(self, description):
        """Endpoint to listen on (tcp:, tcp6:, ssl:, unix:, systemd:); may repeat; replaces --port and --interface."""
        self["listen"].append(description)

    def commandName(self):
        return "twistd sockservice"

    def postOptions(self):
        mode = self["mode"]
        if mode not in MODES:
            raise usage.UsageError(
                f"unknown --mode {mode!r}: choose greet, collect or relay"
            )
        for option, modes in MODE_OPTIONS.items():
            if self[option] not in (None, 0) and mode not in modes:
                raise usage.UsageError(f"--{option} applies only to --mode {modes[0]}")
        if self["count"] is None:
            self["count"] = 5
        if self["ack"] is None:
            self["ack"] = "Information Received"
        if self["max-buffer"] is None:
            self["max-buffer"] = 1 << 20
        self["gate"] = None
        if self["token-file"] is not None:
            try:
                self["gate"] = TokenGate.fromFile(self["token-file"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        greeting = self["greeting"]
        if greeting is None:
            greeting = DEFAULT_GREETINGS[mode]
        self["greetingLine"] = _lineText("greeting", greeting) if greeting else b""
        self["ackLine"] = _lineText("ack", self["ack"])
        self["endpoints"] = self._endpoints()
        self["backplaneAddress"] = self._backplane()
        self._observability()

    def _observability(self):
        """
        Check C{--metrics} and C{--log-format}; point twistd's C{--logger}
        at the chosen log format (it sets up logging before makeService).
        """
        metrics = self["metrics"]
        if metrics is not None:
            try:
                endpoints.serverFromString(globalReactor(), metrics)
            except Exception as e:
                raise usage.UsageError(
                    f"--metrics {metrics!r} is not a usable endpoint: {e}"
                ) from None
            shared = sharedPort(metrics, self["endpoints"])
            if shared is not None:
                raise usage.UsageError(
                    f"--metrics {metrics!r} would share a port with the line protocol's {shared!r}"
                )
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(
                f"unknown --log-format {self['log-format']!r}: choose text or json"
            )
        if self.parent is not None:
            try:
                logger = twistdLogger(self["log-format"], self.parent)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            if logger is not None:
                self.parent["logger"] = logger

    def _backplane(self):
        if self["backplane"] is None:
            for option in ("channel", "backplane-outbox"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} applies only with --backplane")
            return None
        if self["channel"] is None:
            self["channel"] = DEFAULT_CHANNEL
        if self["backplane-outbox"] is None:
            self["backplane-outbox"] = OUTBOX_LIMIT
        try:
            address = parseRedisURL(self["backplane"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if address.tls:
            try:
                from twisted.internet import ssl  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "rediss:// needs TLS support: pip install 'Twisted[tls]'"
                ) from None
        return address

    def _endpoints(self):
        if self["listen"]:
            if self["port"] is not None or self["interface"] is not None:
                raise usage.UsageError(
                    "--listen replaces --port and --interface: give one or the other"
                )
            reactor = globalReactor()
            for description in self["listen"]:
                try:
                    endpoints.serverFromString(reactor, description)
                except Exception as e:
                    raise usage.UsageError(
                        f"--listen {description!r} is not a usable endpoint: {e}"
                    ) from None
            return list(self["listen"])
        port = 12345 if self["port"] is None else self["port"]
        interface = self["interface"] or "0.0.0.0"
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise usage.UsageError(
                f"--interface must be an IP address, not {interface!r}"
            ) from None
        return [f"tcp:{port}:interface={endpoints.quoteStringArgument(interface)}"]


def makeFactory(options, reactor):
    """
    Build the factory of the chosen mode.
    """
    log = FoldingLog(Logger(namespace=f"sockservice.{options['mode']}"), reactor)
    limits = Limits(
        reactor,
        idleTimeout=options["idle-timeout"],
        maxConnections=options["max-connections"],
        maxPerIP=options["max-per-ip"],
        maxBuffer=options["max-buffer"],
    )
    common = dict(
        log=log, maxLine=options["max-line"], greeting=options["greetingLine"], limits=limits
    )
    mode = options["mode"]
    if mode == "greet":
        return GreetFactory(ack=options["ackLine"], **common)
    if mode == "collect":
        return CollectFactory(count=options["count"], **common)
    return RelayFactory(
        hub=makeHub(options, reactor), logMessages=options["log-messages"],
        gate=options["gate"], **common
    )


def makeHub(options, reactor):
    """
    The relay hub: this process's clients only, or every node's through the
    Redis backplane.
    """
    address = options["backplaneAddress"]
    if address is None:
        return LocalHub()
    # Imported here, not with this module: txredisapi imports the global
    # reactor, which would install the default one before globalReactor can
    # choose.
    from sockservice.hubs.redis import RedisHub, redisEndpoint

    log = FoldingLog(Logger(namespace="sockservice.backplane"), reactor, budget=1, interval=10.0)
    return RedisHub(
        reactor, redisEndpoint(reactor, address), address, options["channel"], log,
        outboxLimit=options["backplane-outbox"],
    )


def globalReactor():
    """
    The reactor to run on: the one C{twistd --reactor} installed while
    parsing options, else L{directepoll} where Linux has epoll, else
    Twisted's default.
    """
    if "twisted.internet.reactor" not in sys.modules and hasattr(select, "epoll"):
        # Imported only here: it needs epoll, which only Linux has.
        from sockservice.fastpath import directepoll

        directepoll.install()
    from twisted.internet import reactor

    return reactor


def makeService(options, reactor=None, environ=os.environ):
    """
    A L{service.MultiService} listening on every endpoint with one factory.
    In collect mode it stops listening once the count is reached and stops
    the reactor (twistd exits 0) when the last connection has closed.
    Stopping closes the listeners, then drains the connections, then stops
    the Redis hub; systemd hears READY=1 once all listen and STOPPING=1
    first thing on stop.
    """
    if reactor is None:
        reactor = globalReactor()
    fitting = raiseOpenFileLimit(options["max-connections"])
    if fitting < options["max-connections"]:
        Logger().warn(
            "the open file limit lets only {fitting} connections in, "
            "not --max-connections {wanted}: raise it (ulimit -n, LimitNOFILE=)",
            fitting=fitting, wanted=options["max-connections"],
        )
    factory = makeFactory(options, reactor)
    top = service.MultiService()
    hub = getattr(factory, "hub", None)
    if service.IService.providedBy(hub):
        hub.setServiceParent(top)
    DrainingService(factory, reactor, options["drain-timeout"]).setServiceParent(top)
    listeners = []
    for description in options["endpoints"]:
        endpoint = endpoints.serverFromString(reactor, description)
        listener = ListeningService(endpoint, description, factory)
        listener.setServiceParent(top)
        listeners.append(listener)
    if options["metrics"] is not None:
        MetricsService(
            endpoints.serverFromString(reactor, options["metrics"]), options["metrics"],
            factory, listeners, reactor, fullyQualifiedName(type(reactor)),
        ).setServiceParent(top)
    NotifyService(listeners, environ).setServiceParent(top)
    if options["mode"] == "collect":
        factory.allAccepted.addCallback(
            lambda _: [listener.stopService() for listener in listeners]
        )
        factory.finished.addCallback(lambda _: reactor.stop())
    return top
