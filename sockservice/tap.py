"""
The twistd plugin's options and service: C{twistd -n sockservice ...}.
"""

import getopt
import ipaddress
import os
import select
import signal
import sys
from dataclasses import replace

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.reflect import fullyQualifiedName

from sockservice.commandline import OneLineUsageErrors, wholeNumber
from sockservice.config import Config, fileError, readConfigFile
from sockservice.hubs.local import LocalHub
from sockservice.hubs.outbox import OUTBOX_LIMIT
from sockservice.hubs.redisurl import EXTRA, RETAIN, parseRedisURL, redisClientInstalled
from sockservice.logs.folding import FoldingLog, foldAcceptErrors
from sockservice.logs.formats import twistdLogger
from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.modes.relay import RelayFactory
from sockservice.service.abort import SecondSignalService
from sockservice.service.draining import DrainingService, StopInOrder
from sockservice.service.listening import CannotListen, ListeningService
from sockservice.service.notify import NotifyService
from sockservice.service.reload import ReloadService
from sockservice.service.tls import loadCertificateOptions, useServerTLS
from sockservice.web.metrics import MetricsService, sharedPort
from sockservice.web.websocket import WebSocketService, parseOrigin
from sockservice.wire.addresses import defaultBacklog, withBacklog
from sockservice.wire.auth import TokenGate
from sockservice.wire.limits import Limits, raiseOpenFileLimit

MODES = ("greet", "collect", "relay")
DEFAULT_GREETINGS = {"greet": "connect", "collect": "测试成功！", "relay": ""}
DEFAULT_CHANNEL = "sockservice:relay"
#: The options that say where to listen: any of them on the command line
#: overrides all of them in the config file.
LISTENER_OPTIONS = ("listen", "port", "interface")
#: The options that may repeat: lists in the config file.
LIST_OPTIONS = ("listen", "websocket", "websocket-origin")
MODE_OPTIONS = {
    "ack": ("greet",),
    "count": ("collect",),
    "log-messages": ("relay",),
    "max-buffer": ("relay",),
    "token-file": ("relay",),
    "backplane": ("relay",),
    "channel": ("relay",),
    "backplane-outbox": ("relay",),
    "backplane-retain": ("relay",),
    "history": ("relay",),
}


def _lineText(value):
    """
    A greeting or ack as one UTF-8 line (with its LF), or L{ValueError}.
    """
    if "\n" in value or "\r" in value:
        raise ValueError("must be one line, without CR or LF")
    try:
        return value.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8 text") from None


#: How a config file value of each TOML type is named in an error.
TOML_TYPES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
              list: "a list", dict: "a table"}


class Options(OneLineUsageErrors):
    """
    C{twistd sockservice} options, read from the command line and the
    C{--config} file, resolved into one L{Config} (C{self.config}). Usage
    errors end the command with one line on stderr and exit status 2, never
    a traceback.

    To add an option: one line in C{optParameters} (or C{optFlags}) and a
    L{Config} field named after it in camelCase; it can then be given in the
    config file too.
    """

    synopsis = "[--mode greet|collect|relay] [--port 12345] [--config FILE] [options]"
    longdesc = (
        "Serve the line protocols of the PHP socket tutorials: greet answers "
        "every line with an ack, collect takes one message from each of "
        "--count connections and exits, relay passes every line to every "
        "other client. --config reads a TOML file whose keys are these long "
        "option names (listen is a list); the command line wins over it."
    )

    optParameters = [
        ["config", "c", None, "TOML file of options, re-read on SIGHUP (systemctl reload)."],
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
        ["backlog", None, None,
         "Listen queue of --port and of every --listen tcp:, tcp6:, ssl: or unix: "
         "endpoint that names none [default: 1024, or the system's somaxconn if lower]",
         wholeNumber("backlog", 1)],
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
         f"relay: the Redis stream the nodes share [default: {DEFAULT_CHANNEL}]."],
        ["backplane-outbox", None, None,
         "relay: bytes held for Redis while it is away; lines beyond that "
         f"do not reach other nodes and are counted [default: {OUTBOX_LIMIT}]",
         wholeNumber("backplane-outbox", 0)],
        ["backplane-retain", None, None,
         "relay: entries the Redis stream keeps, about: how far behind a node "
         f"that was away can catch up [default: {RETAIN}]",
         wholeNumber("backplane-retain", 1)],
        ["history", None, 0,
         "relay: lines a client gets on joining, the last relayed (with --backplane, "
         "the stream's); 0: none", wholeNumber("history", 0)],
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
        for option in LIST_OPTIONS:
            self[option] = []
        self.argv = ()
        self.fromFile = set()

    def opt_listen(self, description):
        """Endpoint to listen on (tcp:, tcp6:, ssl:, unix:, systemd:); may repeat; replaces --port and --interface."""
        self["listen"].append(description)

    def opt_websocket(self, description):
        """Endpoint serving the browser chat page and WebSocket (ssl: for wss); may repeat."""
        self["websocket"].append(description)

    def opt_websocket_origin(self, origin):
        """Origin (https://host[:port]) whose pages may use --websocket; may repeat [default: the page's own]."""
        self["websocket-origin"].append(origin)

    def commandName(self):
        return "twistd sockservice"

    def parseOptions(self, options=None):
        self.argv = tuple(sys.argv[1:] if options is None else options)
        OneLineUsageErrors.parseOptions(self, self.argv)

    @classmethod
    def configFrom(cls, argv):
        """
        The L{Config} of command line C{argv} and the config file it names as
        that file is now: what a reload applies.

        @raise usage.UsageError: as parsing would end the command.
        """
        options = cls()
        options.argv = tuple(argv)
        try:
            usage.Options.parseOptions(options, list(argv))
        except usage.UsageError as e:
            raise usage.UsageError(
                str(e).removeprefix("Parameter type enforcement failed: ")
            ) from None
        return options.config

    def postOptions(self):
        if self["config"] is not None:
            self._readConfigFile(self["config"])
        mode = self["mode"]
        if mode not in MODES:
            raise self._bad("mode", f"unknown --mode {mode!r}: choose greet, collect or relay")
        for option, modes in MODE_OPTIONS.items():
            if self[option] not in (None, 0) and mode not in modes:
                raise self._bad(option, f"--{option} applies only to --mode {modes[0]}")
        for option, default in (("count", 5), ("ack", "Information Received"),
                                ("max-buffer", 1 << 20), ("backlog", defaultBacklog())):
            if self[option] is None:
                self[option] = default
        token = None
        if self["token-file"] is not None:
            try:
                token = TokenGate.fromFile(self["token-file"]).token
            except ValueError as e:
                raise self._bad("token-file", str(e)) from None
        greeting = self["greeting"]
        if greeting is None:
            greeting = DEFAULT_GREETINGS[mode]
        lines = tuple(self._endpoints())
        websockets = self._websockets()
        self._observability(lines + websockets["websocket"])
        self.config = Config.fromOptions(
            self, greeting=self._line("greeting", greeting) if greeting else b"",
            ack=self._line("ack", self["ack"]), token=token,
            endpoints=lines, backplaneAddress=self._backplane(),
            logMessages=bool(self["log-messages"]), argv=self.argv, **websockets,
        )

    def _observability(self, lines):
        """
        Check C{--metrics} against the line protocol's endpoints C{lines}
        (TCP and WebSocket),
        and C{--log-format}; point twistd's C{--logger} at the chosen log
        format (it sets up logging before makeService).
        """
        metrics = self["metrics"]
        if metrics is not None:
            try:
                checkEndpoint(metrics)
            except Exception as e:
                raise self._bad(
                    "metrics", f"--metrics {metrics!r} is not a usable endpoint: {e}"
                ) from None
            shared = sharedPort(metrics, lines)
            if shared is not None:
                raise self._bad(
                    "metrics",
                    f"--metrics {metrics!r} would share a port with the line protocol's {shared!r}",
                )
        if self["log-format"] not in ("text", "json"):
            raise self._bad(
                "log-format", f"unknown --log-format {self['log-format']!r}: choose text or json"
            )
        if self.parent is not None:
            try:
                logger = twistdLogger(self["log-format"], self.parent)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            if logger is not None:
                self.parent["logger"] = logger

    def _bad(self, option, problem):
        """
        The usage error for C{problem} with C{option}, naming the config
        file and key when the value came from there.
        """
        if option in self.fromFile:
            return fileError(self["config"], option, problem)
        return usage.UsageError(problem)

    def _line(self, option, text):
        try:
            return _lineText(text)
        except ValueError as e:
            raise self._bad(option, f"--{option} {e}") from None

    def _givenOnCommandLine(self):
        """
        The long names of the options on the command line, which win over
        the config file.
        """
        try:
            given, _ = getopt.getopt(list(self.argv), self.shortOpt, self.longOpt)
        except getopt.GetoptError:
            return set()
        return {self.synonyms[name.lstrip("-")] for name, _ in given}

    def _readConfigFile(self, path):
        """
        Take each option in the TOML file at C{path} that the command line
        does not give.
        """
        given = self._givenOnCommandLine()
        if given & set(LISTENER_OPTIONS):
            # A listener on the command line replaces the file's listeners.
            given |= set(LISTENER_OPTIONS)
        for key, value in readConfigFile(path).items():
            value = self._fileValue(path, key, value)
            if key not in given:
                self[key] = value
                self.fromFile.add(key)

    def _fileValue(self, path, key, value):
        """
        C{value} of C{key} in the config file at C{path}, checked and
        coerced as the command line would be. A parameter's coercer takes
        the TOML type it names in its C{tomlType} (a string if none).
        """
        if key in LIST_OPTIONS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fileError(path, key, f"must be a list of strings, not {value!r}")
            return value
        if key in {flag[0] for flag in self.optFlags}:
            if not isinstance(value, bool):
                raise fileError(path, key, f"must be true or false, not {_tomlType(value)}")
            return int(value)
        parameters = {p[0]: p for p in self.optParameters if p[0] != "config"}
        if key not in parameters:
            raise fileError(path, key, "unknown key")
        coerce = parameters[key][4] if len(parameters[key]) > 4 else None
        wanted = getattr(coerce, "tomlType", str)
        if type(value) is not wanted:
            raise fileError(path, key, f"must be {TOML_TYPES[wanted]}, not {_tomlType(value)}")
        if coerce is None:
            return value
        try:
            return coerce(str(value))
        except ValueError as e:
            raise fileError(path, key, str(e)) from None

    def _backplane(self):
        if self["backplane"] is None:
            for option in ("channel", "backplane-outbox", "backplane-retain"):
                if self[option] is not None:
                    raise self._bad(option, f"--{option} applies only with --backplane")
            return None
        if self["channel"] is None:
            self["channel"] = DEFAULT_CHANNEL
        if self["backplane-outbox"] is None:
            self["backplane-outbox"] = OUTBOX_LIMIT
        if self["backplane-retain"] is None:
            self["backplane-retain"] = RETAIN
        if not redisClientInstalled():
            raise usage.UsageError(f"--backplane needs the Redis client: {EXTRA}")
        try:
            address = parseRedisURL(self["backplane"])
        except ValueError as e:
            raise self._bad("backplane", str(e)) from None
        if address.tls:
            try:
                from twisted.internet import ssl  # noqa: F401
            except ImportError:
                raise self._bad(
                    "backplane", "rediss:// needs TLS support: pip install 'Twisted[tls]'"
                ) from None
        return address

    def _websockets(self):
        """
        The C{websocket} and C{websocket-origin} fields: the endpoints,
        checked, and the origins as browsers send them.
        """
        origins = []
        for origin in self["websocket-origin"]:
            try:
                origins.append(parseOrigin(origin))
            except ValueError as e:
                raise self._bad("websocket-origin", str(e)) from None
        if origins and not self["websocket"]:
            raise self._bad("websocket-origin", "--websocket-origin applies only with --websocket")
        for description in self["websocket"]:
            self._checkEndpoint("websocket", description)
        return dict(websocket=tuple(self["websocket"]), websocketOrigin=tuple(origins))

    def _checkEndpoint(self, option, description):
        try:
            checkEndpoint(description)
        except Exception as e:
            raise self._bad(
                option, f"--{option} {description!r} is not a usable endpoint: {e}"
            ) from None

    def _endpoints(self):
        if self["listen"]:
            if self["port"] is not None or self["interface"] is not None:
                blame = next((o for o in ("port", "interface") if o in self.fromFile), "listen")
                raise self._bad(
                    blame, "--listen replaces --port and --interface: give one or the other"
                )
            for description in self["listen"]:
                self._checkEndpoint("listen", description)
            return list(self["listen"])
        port = 12345 if self["port"] is None else self["port"]
        interface = self["interface"] or "0.0.0.0"
        try:
            ipaddress.ip_address(interface)
        except ValueError:
            raise self._bad(
                "interface", f"--interface must be an IP address, not {interface!r}"
            ) from None
        return [f"tcp:{port}:interface={endpoints.quoteStringArgument(interface)}"]


def _tomlType(value):
    return next((name for kind, name in TOML_TYPES.items() if isinstance(value, kind)),
                type(value).__name__)


def checkEndpoint(description):
    """
    Parse C{description} as a server endpoint, loading any TLS certificate
    and key it names, without installing a reactor: option parsing runs
    before twistd's C{--reactor} choice takes effect.
    """
    return endpoints.serverFromString(MemoryReactor(), description)


def makeFactory(config, reactor):
    """
    Build the factory of the chosen mode.
    """
    log = FoldingLog(Logger(namespace=f"sockservice.{config.mode}"), reactor)
    limits = Limits(
        reactor,
        idleTimeout=config.idleTimeout,
        maxConnections=config.maxConnections,
        maxPerIP=config.maxPerIP,
        maxBuffer=config.maxBuffer,
    )
    common = dict(log=log, maxLine=config.maxLine, greeting=config.greeting, limits=limits)
    if config.mode == "greet":
        return GreetFactory(ack=config.ack, **common)
    if config.mode == "collect":
        return CollectFactory(count=config.count, **common)
    return RelayFactory(
        hub=makeHub(config, reactor), logMessages=config.logMessages,
        gate=None if config.token is None else TokenGate(config.token), **common
    )


def makeHub(config, reactor):
    """
    The relay hub: this process's clients only, or every node's through the
    Redis backplane.
    """
    address = config.backplaneAddress
    if address is None:
        return LocalHub(config.history)
    # Imported here, not with this module: txredisapi imports the global
    # reactor, which would install the default one before globalReactor can
    # choose.
    from sockservice.hubs.redis import RedisHub, redisEndpoint

    log = FoldingLog(Logger(namespace="sockservice.backplane"), reactor, budget=1, interval=10.0)
    return RedisHub(
        reactor, redisEndpoint(reactor, address), address, config.channel, log,
        outboxLimit=config.backplaneOutbox, retain=config.backplaneRetain,
        history=config.history,
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


def fitOpenFileLimit(config, openFileLimit):
    """
    C{config} with C{maxConnections} lowered to what the open file limit
    lets in, once C{openFileLimit} has raised it as far as it goes, with
    one warning when it had to be: clients over it then get C{ERROR server
    full} instead of a failed accept.
    """
    fitting = openFileLimit(config.maxConnections)
    if fitting >= config.maxConnections:
        return config
    Logger().warn(
        "the open file limit lets only {fitting} connections in, "
        "not --max-connections {wanted}: raise it (ulimit -n, LimitNOFILE=)",
        fitting=fitting, wanted=config.maxConnections,
    )
    return replace(config, maxConnections=fitting)


def makeService(options, reactor=None, environ=os.environ, openFileLimit=raiseOpenFileLimit,
                signals=signal):
    """
    A L{service.MultiService} listening on every endpoint with one factory,
    from C{options.config}. In collect mode it stops listening once the
    count is reached and stops the reactor (twistd exits 0) when the last
    connection has closed. Stopping closes the listeners, then drains the
    connections, then, once they have all closed, stops the Redis hub;
    accept errors (out of descriptors) are logged at most once a second;
    systemd hears READY=1 once all
    listen, RELOADING=1 and READY=1 around a reload (SIGHUP) and
    STOPPING=1 first thing on stop. A second SIGINT or SIGTERM while
    stopping aborts the connections still draining.

    It listens at once: twistd daemonizes after makeService, and from then
    on a failure to listen could only reach the terminal as twistd's own
    "An error has occurred" message. A port in use ends the command here,
    in the foreground or not, with one line on stderr and status 1, before
    twistd has written a pid file or forked.

    @param openFileLimit: raises the open file limit for a number of
        connections and returns how many fit (L{raiseOpenFileLimit}).
    @param signals: where the SIGHUP, SIGINT and SIGTERM handlers go (the
        L{signal} module).
    """
    if reactor is None:
        reactor = globalReactor()
    config = fitOpenFileLimit(options.config, openFileLimit)
    factory = makeFactory(config, reactor)
    acceptErrors = FoldingLog(Logger(namespace="sockservice.accept"), reactor, budget=1)
    top = StopInOrder()
    hub = getattr(factory, "hub", None)
    if service.IService.providedBy(hub):
        hub.setServiceParent(top)
    listeners, metrics = [], None
    if config.metrics is not None:
        # Added before the draining service, so it stops after the
        # connections have drained: /healthz answers 503 meanwhile.
        metrics = MetricsService(
            endpoints.serverFromString(reactor, config.metrics), config.metrics,
            factory, listeners, reactor, fullyQualifiedName(type(reactor)),
        )
        metrics.setServiceParent(top)
    draining = DrainingService(factory, reactor, config.drainTimeout)
    draining.setServiceParent(top)
    for description in config.endpoints:
        endpoint = endpoints.serverFromString(reactor, withBacklog(description, config.backlog))
        listener = ListeningService(endpoint, description, factory)
        listener.whenListening().addCallback(foldAcceptErrors, acceptErrors)
        listener.setServiceParent(top)
        listeners.append(listener)
    if config.websocket:
        websockets = WebSocketService(reactor, factory, config.websocket, config.websocketOrigin)
        websockets.setServiceParent(top)
        listeners.extend(websockets.listeners)
    tls = {listener.description: serverTLS for listener in listeners
           if (serverTLS := useServerTLS(listener.endpoint)) is not None}
    notifier = NotifyService(listeners, reactor, environ)
    notifier.setServiceParent(top)
    ReloadService(
        config, lambda: fitOpenFileLimit(Options.configFrom(config.argv), openFileLimit),
        factory, draining, notifier, reactor, tls=tls, loadTLS=loadCertificateOptions,
        signals=signals,
    ).setServiceParent(top)
    SecondSignalService(factory, reactor, signals).setServiceParent(top)
    if config.mode == "collect":
        factory.allAccepted.addCallback(
            lambda _: [listener.stopService() for listener in listeners]
        )
        factory.finished.addCallback(lambda _: reactor.stop())
    try:
        for listener in listeners + ([metrics] if metrics else []):
            listener.privilegedStartService()
    except CannotListen as e:
        sys.stderr.write(f"sockservice: {e}\n")
        raise SystemExit(1) from None
    return top
