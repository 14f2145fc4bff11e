"""
The envelope one relay node publishes to the others.
"""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.envelope import Envelope, pack, unpack

NODE = b"0123456789abcdef"


class EnvelopeTests(SynchronousTestCase):
    def test_wire(self):
        """
        A readable header line, then the data untouched.
        """
        self.assertEqual(pack(NODE, 7, b"hi\r\n"), b"sockservice/1 0123456789abcdef 7\nhi\r\n")

    @given(st.binary(), st.integers(min_value=0, max_value=2**63))
    def test_roundTrip(self, data, sender):
        """
        Any bytes, line breaks and NULs included, come back exactly.
        """
        self.assertEqual(unpack(pack(NODE, sender, data)), Envelope(NODE, sender, data))

    def test_notAnEnvelope(self):
        for message in (
            b"",
            b"hello\n",
            b"sockservice/1 node\nx\n",
            b"sockservice/2 node 1\nx\n",
            b"sockservice/1  1\nx\n",
            b"sockservice/1 node -1\nx\n",
            b"sockservice/1 node 1",
        ):
            with self.assertRaises(ValueError, msg=repr(message)):
                unpack(message)
