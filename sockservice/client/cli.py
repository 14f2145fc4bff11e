"""
The C{sockservice} command: one client per mode (greet, send, collect,
chat), as L{usage.Options} subcommands run with L{task.react}.
"""

import ipaddress
import os
import re
import sys

from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet import endpoints, error, ssl, stdio, task
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage

from sockservice.client import status
from sockservice.client.options import CommandOptions
from sockservice.client.protocols import (
    ChatClient,
    ChatInput,
    CollectClient,
    ExchangeFailed,
    GreetClient,
    SendClient,
)
from sockservice.client.websocket import WebSocketLineEndpoint, webSocketURL
from sockservice.commandline import OneLineUsageErrors, wholeNumber
from sockservice.wire.auth import TokenGate


def _seconds(value):
    """
    A C{--timeout} value: seconds above zero, fractions allowed.
    """
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds < float("inf"):
        raise ValueError(f"--timeout must be a number of seconds above 0, not {value!r}")
    return seconds


_seconds.coerceDoc = "(seconds)"


def _authority(path):
    """
    The certificate in the PEM file at C{path}, to trust for C{--tls}.
    """
    try:
        with open(path, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except OSError as e:
        raise usage.UsageError(f"cannot read --cafile {path!r}: {e.strerror}") from None
    except OpenSSLError:
        raise usage.UsageError(f"--cafile {path!r} holds no PEM certificate") from None


def _message(text):
    """
    A message argument as the bytes it was given in (see L{os.fsencode}),
    refused if it is more than one line.
    """
    if "\n" in text or "\r" in text:
        raise usage.UsageError("a MESSAGE must be one line, without CR or LF")
    return os.fsencode(text)


def _looksLikeHost(text):
    """
    Whether C{text} is an IP address or C{localhost}: a host, not a message.
    """
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text == "localhost"
    return True


# HOST:PORT in one argument, as socat or a URL would have it.
_HOST_COLON_PORT = re.compile(r"(\[[^\]]+\]|[^\s:\[\]]+):[0-9]+")

_port = wholeNumber("port", 1, 65535)

_SERVER_RULE = (
    " The server is --host and --port, or HOST PORT as nc takes them: the "
    "first two arguments when the second is a number. An IP address or "
    "localhost first needs its PORT after it, HOST:PORT must be two "
    "arguments; arguments after -- are all messages."
)


class ClientOptions(CommandOptions):
    """
    Where to connect, how (TLS, the relay token) and how long to wait,
    shared by every command.
    """

    optParameters = [
        ["host", None, None, "Server host name or address (default 127.0.0.1)."],
        ["port", "p", None, "Server TCP port (default 12345)", _port],
        ["timeout", "t", 10.0,
         "Seconds to wait for the connection and for each awaited reply.", _seconds],
        ["cafile", None, None,
         "PEM certificate to trust for --tls (such as the server's self-signed "
         "one) instead of the system's authorities; implies --tls."],
        ["token-file", None, None,
         "Send this file's first line first: the token of a relay server run "
         "with --token-file."],
    ]
    optFlags = [
        ["tls", None, "Connect with TLS, checking that the server's certificate "
         "names --host."],
    ]

    # What to do to send arguments that read as HOST PORT.
    separatorHint = " (put messages after --)"

    def parseOptions(self, options=None):
        self._argv = list(sys.argv[1:] if options is None else options)
        usage.Options.parseOptions(self, options)

    def _afterSeparator(self, args):
        """
        Whether C{args}, what is left after the options, came after C{--}.
        """
        before = len(self._argv) - len(args) - 1
        return before >= 0 and self._argv[before] == "--"

    def _setServer(self, host, port):
        """
        Take C{host} and C{port} given as arguments, nc-style.
        """
        if self["host"] is not None or self["port"] is not None:
            raise usage.UsageError(
                "give the server as HOST PORT or with --host/--port, not both" + self.separatorHint
            )
        self["host"] = host
        if port is not None:
            try:
                self["port"] = _port(port)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    def serverArguments(self, args):
        """
        Take a leading C{HOST PORT} from C{args}, as nc takes them, and return
        the rest (the messages). The rule, so that no argument is silently
        taken for another: the first two arguments are HOST and PORT when the
        second is a number; an IP address or C{localhost} first without a
        PORT after it, or a first argument of the form HOST:PORT, is an
        error; arguments after C{--} are all messages.
        """
        if self._afterSeparator(args):
            return args
        if len(args) >= 2 and args[1].isascii() and args[1].isdigit():
            self._setServer(args[0], args[1])
            return args[2:]
        if args and _looksLikeHost(args[0]):
            raise usage.UsageError(
                f"{args[0]!r} is a host: give HOST PORT to connect to it,"
                " or put messages after --"
            )
        if args and _HOST_COLON_PORT.fullmatch(args[0]):
            raise usage.UsageError(
                f"{args[0]!r} reads as HOST:PORT: give HOST PORT as two arguments,"
                " or put messages after --"
            )
        return args

    def parseArgs(self, *args):
        self.takeMessages(self.serverArguments(args))

    def takeMessages(self, messages):
        """
        Take the MESSAGE arguments, what is left after a HOST PORT.
        """
        raise NotImplementedError()

    def postOptions(self):
        if self["host"] is None:
            self["host"] = "127.0.0.1"
        if self["port"] is None:
            self["port"] = 12345
        self["trustRoot"] = None
        if self["cafile"] is not None:
            self["tls"] = True
            self["trustRoot"] = _authority(self["cafile"])
        self["token"] = None
        if self["token-file"] is not None:
            try:
                self["token"] = TokenGate.fromFile(self["token-file"]).token
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    def exchange(self, reactor, client):
        """
        Wait for C{client}'s exchange to end.
        """
        return client.done


class GreetOptions(ClientOptions):
    synopsis = "[options] [HOST PORT] [MESSAGE ...]"
    longdesc = (
        "The seed 000 client for a greet server: print the greeting, send each "
        "MESSAGE (default: SOME DATA) as a line, print each ack, exit 0 once "
        "every ack arrived." + _SERVER_RULE
    )

    def takeMessages(self, messages):
        self["messages"] = [_message(m) for m in messages] or [b"SOME DATA"]

    def client(self, output, clock):
        return GreetClient(output, clock, self["timeout"], self["messages"])


class SendOptions(ClientOptions):
    synopsis = "[options] [HOST PORT] MESSAGE [MESSAGE ...]"
    longdesc = (
        "The seed 002 client: print CONNECTED, send each MESSAGE as a line, "
        "close once everything is sent." + _SERVER_RULE
    )

    def takeMessages(self, messages):
        if not messages:
            raise usage.UsageError("give at least one MESSAGE to send")
        self["messages"] = [_message(m) for m in messages]

    def client(self, output, clock):
        return SendClient(output, clock, self["timeout"], self["messages"])


class CollectOptions(ClientOptions):
    synopsis = "[options] [HOST PORT] [MESSAGE]"
    longdesc = (
        "The seed 004 client for a collect server: send MESSAGE (default: hello) "
        "and print everything the server sends until it closes." + _SERVER_RULE
    )

    def takeMessages(self, messages):
        if len(messages) > 1:
            raise usage.UsageError("give one MESSAGE (quote it if it has spaces)")
        self["message"] = _message(messages[0]) if messages else b"hello"

    def client(self, output, clock):
        return CollectClient(output, clock, self["timeout"], self["message"])


class ChatOptions(ClientOptions):
    synopsis = "[options] [HOST [PORT]]"
    separatorHint = ""
    optParameters = [
        ["websocket", None, None, "Join through a --websocket listener instead of "
         "HOST PORT (--host/--port), as a browser does", webSocketURL],
    ]
    longdesc = (
        "Talk through a relay server: lines read from stdin go out, lines "
        "relayed from the others are printed as they arrive. The end of input "
        "(Ctrl-D) closes the connection (status 0); the server closing or "
        "Ctrl-C ends the command with status 1."
    )

    def parseArgs(self, *args):
        if len(args) > 2:
            raise usage.UsageError("give at most HOST and PORT: chat sends what you type")
        if args:
            host, port = (*args, None)[:2]
            self._setServer(host, port)

    def postOptions(self):
        if self["websocket"] is not None and (self["host"], self["port"]) != (None, None):
            raise usage.UsageError(
                "--websocket URL names the server: give it or HOST PORT, not both"
            )
        ClientOptions.postOptions(self)

    def client(self, output, clock):
        return ChatClient(output, clock, self["timeout"])

    @inlineCallbacks
    def exchange(self, reactor, client):
        """
        Chat on stdin/stdout until either side closes, then flush stdout.
        """
        terminal = ChatInput(client)
        stdio.StandardIO(terminal, reactor=reactor)
        client.output = terminal.transport.write
        try:
            yield client.done
        finally:
            terminal.transport.loseConnection()
            yield terminal.closed


class Options(OneLineUsageErrors, CommandOptions):
    """
    C{sockservice COMMAND [options]}. Usage errors end the command with one
    line on stderr and exit status 2, never a traceback.
    """

    synopsis = "Usage: sockservice"
    longdesc = "Clients for the sockservice line servers. Run sockservice COMMAND --help for each."
    subCommands = [
        ["greet", None, GreetOptions, "Greeting, then an ack for each message (greet mode)."],
        ["send", None, SendOptions, "Send messages and close (seed 002 client)."],
        ["collect", None, CollectOptions, "Send one message, print all until close (collect mode)."],
        ["chat", None, ChatOptions, "Interactive relay client on stdin/stdout (relay mode)."],
        ["status", None, status.StatusOptions, "Summarize a server from its --metrics."],
    ]

    def getSynopsis(self):
        return "Usage: sockservice" + ("" if self.subCommand else " COMMAND [options]")

    def commandName(self):
        return " ".join(filter(None, ["sockservice", self.subCommand]))

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("choose a command: greet, send, collect, chat or status")


def serverName(options):
    """
    C{host:port} as users type it (C{[host]:port} for an IPv6 address).
    """
    if options.get("websocket"):
        return options["websocket"]
    host = options["host"]
    return f"[{host}]:{options['port']}" if ":" in host else f"{host}:{options['port']}"


def clientEndpoint(reactor, options):
    """
    The endpoint every command connects through: the one place that knows
    how to reach the server (IPv4, IPv6 or a name, within C{--timeout}; over
    TLS with C{--tls}; or a C{--websocket} URL).
    """
    if options.get("websocket"):
        return WebSocketLineEndpoint(
            reactor, options["websocket"], options["trustRoot"], options["timeout"]
        )
    endpoint = endpoints.HostnameEndpoint(
        reactor, options["host"], options["port"], timeout=options["timeout"]
    )
    if options["tls"]:
        tls = ssl.optionsForClientTLS(options["host"], trustRoot=options["trustRoot"])
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    return endpoint


def _connectProblem(reason, options):
    """
    Why connecting failed, in a few words.
    """
    if isinstance(reason, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, error.TimeoutError):
        return f"no connection within {options['timeout']:g}s"
    if isinstance(reason, error.DNSLookupError):
        return f"cannot resolve {options['host']}"
    return f"cannot connect ({reason})"


def writeStdout(data):
    """
    Print client output at once, so a pipe sees each line as it arrives.
    """
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@inlineCallbacks
def run(reactor, options, output=writeStdout):
    """
    Connect the chosen command's client and wait for its exchange to end.
    A failure, or the program being stopped (Ctrl-C), is one line on stderr
    naming the server, and exit status 1.
    """
    command = options.subOptions
    client = command.client(output, reactor)
    client.firstLine = command["token"]
    connecting = endpoints.connectProtocol(clientEndpoint(reactor, command), client)

    def interrupt():
        if client.transport is None:
            connecting.cancel()
        else:
            client.interrupt()

    reactor.addSystemEventTrigger("before", "shutdown", interrupt)
    try:
        try:
            yield connecting
        except (error.ConnectError, error.DNSLookupError, ValueError) as e:
            raise ExchangeFailed(_connectProblem(e, command)) from None
        except error.ConnectingCancelledError:
            raise ExchangeFailed("interrupted") from None
        yield command.exchange(reactor, client)
    except ExchangeFailed as e:
        sys.stderr.write(f"sockservice {options.subCommand}: {serverName(command)}: {e}\n")
        raise SystemExit(1)


def main(argv=None):
    """
    The console script.
    """
    options = Options()
    options.parseOptions(argv)
    if options.subCommand == "status":
        task.react(status.run, [options.subOptions])
    else:
        task.react(run, [options])
