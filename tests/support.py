"""
Shared test helpers: protocols on string transports, captured log events,
throwaway TLS certificates.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent

from twisted.python.failure import Failure

from sockservice.logs.folding import FoldingLog


def peerAddress(port=5000):
    return IPv4Address("TCP", "127.0.0.1", port)


class CapturedLog:
    """
    A L{FoldingLog} on a fake clock whose events are kept for assertions.
    """

    def __init__(self, budget=100):
        self.events = []
        self.clock = Clock()
        self.log = FoldingLog(Logger(observer=self.events.append), self.clock, budget)

    def messages(self):
        return [formatEvent(event) for event in self.events]


def connect(factory, port=5000, transportType=StringTransport):
    """
    Connect a protocol from C{factory} to a new C{transportType} (a string
    transport); return both.
    """
    address = peerAddress(port)
    proto = factory.buildProtocol(address)
    transport = transportType(peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def received(transport):
    """
    Return and clear what was written to C{transport}.
    """
    data = transport.value()
    transport.clear()
    return data


def disconnect(proto, reason=ConnectionDone):
    """
    Tell C{proto} its connection ended (by default, cleanly).
    """
    proto.connectionLost(Failure(reason()))


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that can close its sending side alone, as TCP and
    UNIX transports can.

    @ivar writeClosed: whether L{loseWriteConnection} was called.
    """

    writeClosed = False

    def loseWriteConnection(self):
        self.writeClosed = True

def makeCertificate(directory):
    """
    Write a throwaway self-signed certificate for C{localhost} and
    127.0.0.1, and its key, into C{directory}; return the paths of the key
    and the certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def clientTLSOptions(certPath):
    """
    Client TLS options that trust only the certificate at C{certPath} and
    check that it names C{localhost}.
    """
    with open(certPath, "rb") as f:
        authority = Certificate.loadPEM(f.read())
    return optionsForClientTLS("localhost", trustRoot=authority)
