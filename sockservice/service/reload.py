"""
Reloading on SIGHUP (C{systemctl reload}): the config file is read again
and what can change while serving is applied to the running factory, with
nobody disconnected; what cannot is logged as needing a restart and left as
it was. A config that does not parse, or a certificate that does not load,
changes nothing.
"""

import signal
from dataclasses import replace

from twisted.application import service
from twisted.logger import Logger

from sockservice.config import optionName
from sockservice.wire.auth import TokenGate

#: The L{sockservice.config.Config} fields applied while serving.
LIVE = ("greeting", "ack", "token", "tokenFile", "maxLine", "idleTimeout", "maxConnections",
        "maxPerIP", "maxBuffer", "drainTimeout")
#: Fields that are not options: they never change on a reload.
FIXED = ("argv", "configFile")


def optionNames(fields):
    """
    The options behind C{fields}, in order, each once.
    """
    return list(dict.fromkeys(optionName(field) for field in fields))


class ReloadService(service.Service):
    """
    Re-reads the config on SIGHUP and applies it to C{factory} (greeting,
    ack, token, max-line, limits), C{draining} (drain-timeout) and the TLS
    listeners' L{sockservice.service.tls.ServerTLS}s, telling systemd
    through C{notifier} (RELOADING=1, then READY=1).

    @ivar config: the L{sockservice.config.Config} in force.
    @ivar reread: returns the config as the command line and config file
        now say, or raises L{twisted.python.usage.UsageError}.
    @ivar loadTLS: the C{CertificateOptions} of an C{ssl:} description, as
        its files are now.
    @ivar tls: description -> L{sockservice.service.tls.ServerTLS}.
    """

    log = Logger()

    def __init__(self, config, reread, factory, draining, notifier, reactor,
                 tls=None, loadTLS=None, signals=signal):
        self.config = config
        self.reread = reread
        self.factory = factory
        self.draining = draining
        self.notifier = notifier
        self.tls = tls or {}
        self.loadTLS = loadTLS
        self._reactor = reactor
        self._signals = signals

    def startService(self):
        service.Service.startService(self)
        self._signals.signal(self._signals.SIGHUP, self._hangUp)

    def stopService(self):
        # Ignored from now on, not reset to its default: a SIGHUP while
        # the connections drain must not kill the process.
        service.Service.stopService(self)
        self._signals.signal(self._signals.SIGHUP, self._signals.SIG_IGN)

    def _hangUp(self, number, frame):
        # systemd 252 ends a reload as soon as ExecReload's kill has exited,
        # unless RELOADING=1 has come by then (it then waits for READY=1):
        # so that goes out from the handler; the reload runs in the reactor.
        self.notifier.reloading()
        self._reactor.callFromThread(self._reloadThenReady)

    def reload(self):
        """
        Read the config again and apply what it changes, logging what did.
        """
        self.notifier.reloading()
        self._reloadThenReady()

    def _reloadThenReady(self):
        try:
            self._reload()
        finally:
            self.notifier.reloaded()

    def _reload(self):
        source = self.config.configFile or "the command line"
        try:
            new = self.reread()
            fresh = {description: type(tls)(self.loadTLS(description))
                     for description, tls in self.tls.items()}
        except Exception as e:
            self.log.error("reload failed, nothing changed: {problem}", problem=str(e))
            return
        changed = self.config.changes(new)
        restart = [field for field in changed if field not in LIVE and field not in FIXED]
        self.config = replace(new, **{field: getattr(self.config, field) for field in restart})
        self._apply(self.config)
        applied = optionNames(field for field in changed if field in LIVE)
        for description, tls in self.tls.items():
            if tls.fingerprint != fresh[description].fingerprint:
                applied.append(f"certificate of {description}")
            tls.follow(fresh[description])
        self.log.info(
            "reloaded {source}: {changes}", source=source,
            changes=", ".join(applied) + " changed" if applied else "nothing changed",
        )
        if restart:
            self.log.warn(
                "{options} changed in {source}: left as it was until a restart",
                options=", ".join(optionNames(restart)), source=source,
            )

    def _apply(self, config):
        factory = self.factory
        factory.greeting = config.greeting
        if hasattr(factory, "setAck"):
            factory.setAck(config.ack)
        if hasattr(factory, "gate"):
            factory.gate = None if config.token is None else TokenGate(config.token)
        factory.maxLine = config.maxLine
        factory.limits.update(
            idleTimeout=config.idleTimeout, maxConnections=config.maxConnections,
            maxPerIP=config.maxPerIP, maxBuffer=config.maxBuffer,
            peers=[proto.transport.getPeer() for proto in factory.protocols],
        )
        self.draining.timeout = config.drainTimeout
