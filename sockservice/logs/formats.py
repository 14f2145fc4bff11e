"""
Log lines for machines: one JSON object per line, and under systemd the
syslog priority prefix (C{<4>}, see sd-daemon(3)) that lets journald file
each line at its level, so C{journalctl -p warning} shows exactly the
warnings and errors.

twistd sets up its log observer after parsing options and before anything
of ours runs again; the one way in that it offers is C{twistd --logger}, a
dotted name of an observer factory. L{twistdLogger} picks that name from
C{--log-format}, and the tap sets it on twistd's options.
"""

import json
import os
import sys
from datetime import datetime, timezone

from twisted.logger import FileLogObserver, LogLevel, formatEvent, formatEventAsClassicLogText

#: syslog priorities (sd-daemon(3)) of twisted.logger's levels.
PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}

#: What twisted.python.log events carry besides their fields, already in
#: the JSON object's own keys.
_LEGACY_KEYS = {"message", "isError", "system", "time", "format", "why", "failure", "logLevel"}


def _jsonable(value):
    """
    A field value JSON cannot hold, as text: bytes decoded (UTF-8 with
    replacement), anything else as its repr.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def eventAsJSON(event):
    """
    C{event} as one line of JSON: C{time} (ISO 8601, UTC), C{level},
    C{namespace}, C{message} (the formatted text), C{traceback} for a
    failure, and the event's own fields under C{fields}, apart so that none
    can take the place of those keys.
    """
    legacy = "isError" in event
    fields = {
        key: value for key, value in event.items()
        if not key.startswith("log_") and not (legacy and key in _LEGACY_KEYS)
    }
    level = event.get("log_level", LogLevel.info)
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(
            timespec="microseconds"
        ),
        "level": level.name,
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    record["fields"] = fields
    return json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n"


def withPriority(formatter):
    """
    C{formatter} with the event's syslog priority before each line it
    writes, continuation lines (tracebacks) included: journald reads the
    prefix of every line.
    """

    def format(event):
        text = formatter(event)
        if not text:
            return text
        prefix = f"<{PRIORITIES.get(event.get('log_level'), 6)}>"
        return "".join(prefix + line for line in text.splitlines(True))

    return format


def jsonObserver():
    """
    twistd --logger factory: JSON lines on standard output.
    """
    return FileLogObserver(sys.stdout, eventAsJSON)


def journalTextObserver():
    """
    twistd --logger factory: twistd's text lines with their priority, for
    standard output that is the journal.
    """
    return FileLogObserver(sys.stdout, withPriority(formatEventAsClassicLogText))


def journalJSONObserver():
    """
    twistd --logger factory: JSON lines with their priority, for standard
    output that is the journal.
    """
    return FileLogObserver(sys.stdout, withPriority(eventAsJSON))


def onJournal(environ, stream):
    """
    Whether C{stream} is the journal: systemd sets JOURNAL_STREAM to its
    C{device:inode}, and a child whose output went elsewhere may inherit it.
    """
    try:
        device, inode = (int(part) for part in environ.get("JOURNAL_STREAM", "").split(":"))
        status = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


def twistdLogger(logFormat, twistd, environ=os.environ, stdout=sys.stdout):
    """
    The dotted name of the observer factory for C{twistd --logger} that logs
    in C{logFormat} (C{text} or C{json}), or L{None} to keep twistd's own.

    @param twistd: twistd's options; the formats here write to standard
        output, so only where twistd would (C{-n}, no C{--logfile},
        C{--syslog} or C{--logger}).
    @raise ValueError: for JSON that twistd was told to log elsewhere.
    """
    toStdout = (
        twistd.get("nodaemon")
        and twistd.get("logfile") in (None, "", "-")
        and not twistd.get("syslog")
        and twistd.get("logger") is None
    )
    journal = toStdout and onJournal(environ, stdout)
    if logFormat == "json":
        if not toStdout:
            raise ValueError(
                "--log-format json writes to standard output: run twistd -n "
                "without --logfile, --syslog or --logger"
            )
        return f"{__name__}.{'journalJSONObserver' if journal else 'jsonObserver'}"
    return f"{__name__}.journalTextObserver" if journal else None
