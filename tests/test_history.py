"""
History for late joiners (C{--history N}): a relay client that joins gets
the last N relayed lines, then the live ones, with no gap or duplicate.
"""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.local import History, LocalHub
from sockservice.modes.relay import RelayFactory
from sockservice.wire.auth import TokenGate
from tests.support import CapturedLog, connect, received


class HistoryTests(SynchronousTestCase):
    def test_lastLinesAcrossChunks(self):
        """
        The last N lines, cut inside the oldest chunk kept, line endings and
        bytes untouched.
        """
        history = History(3)
        self.assertEqual(history.lines(), b"")
        history.add(b"1\n2\r\n")
        self.assertEqual(history.lines(), b"1\n2\r\n")
        history.add(b"\xff3\n4\n")
        self.assertEqual(history.lines(), b"2\r\n\xff3\n4\n")
        history.add(b"5\n6\n7\n8\n")
        self.assertEqual(history.lines(), b"6\n7\n8\n")

    def test_seededBeforeWhatCameSince(self):
        history = History(4)
        history.add(b"new\n")
        history.seed([b"a\nb\n", b"c\n", b"d\n"])
        self.assertEqual(history.lines(), b"b\nc\nd\nnew\n")

    @given(st.lists(st.lists(st.binary().map(lambda b: b.replace(b"\n", b"") + b"\n"),
                             min_size=1, max_size=5), max_size=30),
           st.integers(min_value=1, max_value=20))
    def test_sameAsLastLines(self, chunks, size):
        """
        Whatever the chunking, the history is the last C{size} lines, and it
        keeps only the chunks it needs.
        """
        history = History(size)
        for chunk in chunks:
            history.add(b"".join(chunk))
        everyLine = [line for chunk in chunks for line in chunk]
        self.assertEqual(history.lines(), b"".join(everyLine[-size:]))
        self.assertLess(len(history._chunks), size + 1)


class RelayHistoryTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()

    def test_lateJoinerGetsHistoryThenLive(self):
        """
        A client connecting later first gets the last N lines relayed, in
        one write before anything live, then every new line once.
        """
        factory = RelayFactory(self.captured.log, LocalHub(history=2))
        a, ta = connect(factory, 5001)
        b, tb = connect(factory, 5002)
        a.dataReceived(b"one\r\ntwo\nthree\n")
        b.dataReceived(b"four\n")
        late, tl = connect(factory, 5003)
        self.assertEqual(received(tl), b"three\nfour\n")
        a.dataReceived(b"five\n")
        self.assertEqual(received(tl), b"five\n")
        self.assertEqual(received(tb), b"one\r\ntwo\nthree\nfive\n")

    def test_offByDefault(self):
        factory = RelayFactory(self.captured.log, LocalHub())
        a, ta = connect(factory, 5001)
        a.dataReceived(b"one\n")
        late, tl = connect(factory, 5002)
        self.assertEqual(received(tl), b"")

    def test_afterTheToken(self):
        """
        With a token gate, the history comes only once the token is right,
        and never to a client that got it wrong.
        """
        factory = RelayFactory(self.captured.log, LocalHub(history=5), gate=TokenGate(b"tok"))
        a, ta = connect(factory, 5001)
        a.dataReceived(b"tok\nsecret\n")
        b, tb = connect(factory, 5002)
        self.assertEqual(received(tb), b"")
        b.dataReceived(b"tok\n")
        self.assertEqual(received(tb), b"secret\n")
        c, tc = connect(factory, 5003)
        c.dataReceived(b"guess\n")
        self.assertEqual(received(tc), b"ERROR unauthorized\n")
