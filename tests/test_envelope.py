"""
The envelope one relay node appends to the stream for the others.
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
        self.assertEqual(
            pack(NODE, 7, 12, b"hi\r\n"), b"sockservice/2 0123456789abcdef 7 12\nhi\r\n"
        )

    @given(st.binary(), st.integers(min_value=0, max_value=2**63),
           st.integers(min_value=0, max_value=2**63))
    def test_roundTrip(self, data, sender, line):
        """
        Any bytes, line breaks and NULs included, come back exactly.
        """
        self.assertEqual(
            unpack(pack(NODE, sender, line, data)), Envelope(NODE, sender, line, data)
        )

    def test_notAnEnvelope(self):
        for message in (
            b"",
            b"hello\n",
            b"sockservice/2 node 1\nx\n",
            b"sockservice/1 node 1 1\nx\n",
            b"sockservice/2  1 1\nx\n",
            b"sockservice/2 node -1 1\nx\n",
            b"sockservice/2 node 1 x\nx\n",
            b"sockservice/2 node 1 1",
        ):
            with self.assertRaises(ValueError, msg=repr(message)):
                unpack(message)
