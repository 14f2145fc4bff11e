"""
The C{sockservice} command: one client per mode (greet, send, collect,
chat), as L{usage.Options} subcommands run with L{task.react}.
"""

import os
import sys

from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet import endpoints, error, ssl, stdio, task
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage

from sockservice import __version__
from sockservice.client import status
from sockservice.client.protocols import (
    ChatClient,
    ChatInput,
    CollectClient,
    ExchangeFailed,
    GreetClient,
    SendClient,
)
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


class _Options(usage.Options):
    def opt_version(self):
        """
        Display the sockservice version and exit.
        """
        print(f"sockservice {__version__}")
        sys.exit(0)


class ClientOptions(_Options):
    """
    Where to connect, how (TLS, the relay token) and how long to wait,
    shared by every command.
    """

    optParameters = [
        ["host", "h", "127.0.0.1", "Server host name or address."],
        ["port", "p", 12345, "Server TCP port.", wholeNumber("port", 1, 65535)],
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

    def postOptions(self):
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
    synopsis = "[options] [MESSAGE ...]"
    longdesc = (
        "The seed 000 client for a greet server: print the greeting, send each "
        "MESSAGE (default: SOME DATA) as a line, print each ack, exit 0 once "
        "every ack arrived."
    )

    def parseArgs(self, *messages):
        self["messages"] = [_message(m) for m in messages] or [b"SOME DATA"]

    def client(self, output, clock):
        return GreetClient(output, clock, self["timeout"], self["messages"])


class SendOptions(ClientOptions):
    synopsis = "[options] MESSAGE [MESSAGE ...]"
    longdesc = (
        "The seed 002 client: print CONNECTED, send each MESSAGE as a line, "
        "close once everything is sent."
    )

    def parseArgs(self, *messages):
        if not messages:
            raise usage.UsageError("give at least one MESSAGE to send")
        self["messages"] = [_message(m) for m in messages]

    def client(self, output, clock):
        return SendClient(output, clock, self["timeout"], self["messages"])


class CollectOptions(ClientOptions):
    synopsis = "[options] [MESSAGE]"
    longdesc = (
        "The seed 004 client for a collect server: send MESSAGE (default: hello) "
        "and print everything the server sends until it closes."
    )

    def parseArgs(self, *messages):
        if len(messages) > 1:
            raise usage.UsageError("give one MESSAGE (quote it if it has spaces)")
        self["message"] = _message(messages[0]) if messages else b"hello"

    def client(self, output, clock):
        return CollectClient(output, clock, self["timeout"], self["message"])


class ChatOptions(ClientOptions):
    synopsis = "[options]"
    longdesc = (
        "Talk through a relay server: lines read from stdin go out, lines "
        "relayed from the others are printed as they arrive. The end of input "
        "(Ctrl-D) closes the connection (status 0); the server closing or "
        "Ctrl-C ends the command with status 1."
    )

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


class Options(OneLineUsageErrors, _Options):
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
    host = options["host"]
    return f"[{host}]:{options['port']}" if ":" in host else f"{host}:{options['port']}"


def clientEndpoint(reactor, options):
    """
    The endpoint every command connects through: the one place that knows
    how to reach the server (IPv4, IPv6 or a name, within C{--timeout}; over
    TLS with C{--tls}).
    """
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
