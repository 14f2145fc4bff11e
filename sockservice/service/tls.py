"""
TLS for C{ssl:} listeners whose certificate and key a reload can replace,
and which works under systemd's C{MemoryDenyWriteExecute=yes}.

Twisted's C{CertificateOptions} always installs an ALPN select callback
(C{setupForALPN}), and pyOpenSSL makes every callback with cffi's
C{ffi.callback}, which needs writable and executable memory: under
C{MemoryDenyWriteExecute=yes} that allocation fails and every handshake
with it. No protocol is negotiated here, so the context is made without
any callback. It leans on one Twisted internal: the
C{SSL4ServerEndpoint._sslContextFactory} that L{useServerTLS} replaces and
L{loadCertificateOptions} reads, as C{serverFromString} offers no other way
to parse an C{ssl:} description into its certificate and port while
choosing the connection creator.
"""

from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.testing import MemoryReactor
from zope.interface import implementer


def serverContext(certificateOptions):
    """
    An OpenSSL context serving the certificate, chain and key of Twisted
    C{certificateOptions} with TLS 1.2 or later, OpenSSL's default ciphers
    and curves, and no callbacks. (An C{ssl:} description's C{sslmethod}
    and C{dhParameters} are not used: TLS 1.2 and 1.3 key exchanges are
    ECDHE.)
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.use_certificate(certificateOptions.certificate.to_cryptography())
    context.use_privatekey(certificateOptions.privateKey.to_cryptography_key())
    for certificate in certificateOptions.extraCertChain or ():
        context.add_extra_chain_cert(certificate.to_cryptography())
    context.check_privatekey()
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Makes each new TLS connection with the current context: after L{follow},
    new handshakes present the new certificate while open connections keep
    theirs.

    @ivar fingerprint: the SHA-256 fingerprint of the certificate served.
    """

    def __init__(self, certificateOptions):
        self._context = serverContext(certificateOptions)
        self.fingerprint = certificateOptions.certificate.digest("sha256").decode("ascii")

    def follow(self, other):
        """
        Serve C{other}'s certificate and key from the next handshake on.
        """
        self._context, self.fingerprint = other._context, other.fingerprint

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self._context, None)


def useServerTLS(endpoint):
    """
    Give C{endpoint}, if it is an C{ssl:} endpoint, a L{ServerTLS} in place
    of its C{CertificateOptions}; return that, or L{None} for other
    endpoints.
    """
    certificateOptions = getattr(endpoint, "_sslContextFactory", None)
    if certificateOptions is None:
        return None
    endpoint._sslContextFactory = ServerTLS(certificateOptions)
    return endpoint._sslContextFactory


def loadCertificateOptions(description):
    """
    The C{CertificateOptions} of C{ssl:} endpoint C{description}, with its
    certificate and key as their files are now (parsed on a memory reactor:
    nothing listens).
    """
    return endpoints.serverFromString(MemoryReactor(), description)._sslContextFactory
