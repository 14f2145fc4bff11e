"""
The deployment under a real systemd: systemd 252 booted as PID 1 of a
container (systemd-nspawn over an overlay of this machine's root, on a tmpfs
that goes away afterwards), sockservice installed in it with deploy/install.sh
as docs/deployment.md says, and every promise of that page checked inside:
the plain service answers, TLS works under the hardened unit with a key only
root can read passed as a credential, a reload applies a changed config while
a client stays connected, kill -9 is restarted, stop drains, and the
socket-activated service starts with its first connection. One boot for all
of it. Needs root, overlayfs and systemd-nspawn (Debian's systemd-container).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(CHECKOUT, "docs", "deployment.md")
#: Where the container sees a copy of the checkout.
INSIDE_CHECKOUT = "/root/checkout"
#: Host units that would start inside the container for nothing.
MASKED = ("postgresql.service", "redis-server.service", "prometheus.service",
          "avahi-daemon.service", "cloud-init.service", "cloud-init-local.service",
          "cloud-config.service", "cloud-final.service", "cloud-init-hotplugd.socket",
          "e2scrub_reap.service", "apt-daily.timer", "apt-daily-upgrade.timer",
          "man-db.timer", "systemd-timesyncd.service", "getty@tty1.service")
EXPOSURE = re.compile(r"Overall exposure level for sockservice\.service: (\d+\.\d+)")
INSIDE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

#: Run inside the container by the client probes: a greet client, a TLS
#: client printing the certificate's fingerprint, one that holds its
#: connection across a command, one that sends a line and then a command.
PROBE = r'''
import hashlib, socket, ssl, subprocess, sys, time

def connect(port, tls=None):
    for attempt in range(50):
        try:
            sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            break
        except ConnectionRefusedError:
            time.sleep(0.2)
    else:
        raise SystemExit("refused")
    if tls:
        context = ssl.create_default_context(cafile=tls)
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock

def lines(sock, count):
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data

kind, port = sys.argv[1:3]
if kind == "greet":
    sock = connect(port)
    sock.sendall(b"hello\n")
    print(repr(lines(sock, 2)))
elif kind == "tls":
    sock = connect(port, tls=sys.argv[3])
    der = sock.getpeercert(binary_form=True)
    print(hashlib.sha256(der).hexdigest(), repr(lines(sock, 1)))
elif kind == "across":
    sock = connect(port)
    first = lines(sock, 1)
    done = subprocess.run(sys.argv[3:], capture_output=True, text=True)
    sock.sendall(b"still here\n")
    print(repr(first), repr(lines(sock, 1)), done.returncode, repr(done.stderr))
elif kind == "stop":
    sock = connect(port)
    greeting = lines(sock, 1)
    sock.sendall(b"last\n")
    stopper = subprocess.Popen(sys.argv[3:])
    rest = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    print(repr(greeting), repr(rest), stopper.wait(timeout=60))
'''

#: Makes a self-signed certificate for localhost with the key at argv[1]
#: (made if missing, mode 0600) into argv[2], with the venv's cryptography.
MAKE_CERTIFICATE = r'''
import datetime, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
keyPath, certPath = sys.argv[1:3]
if os.path.exists(keyPath):
    with open(keyPath, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
else:
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256()))
with open(certPath, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
'''


def run(*argv, timeout=60, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def whyNotBootable():
    """
    Why this machine cannot boot a systemd container, or L{None}.
    """
    if os.geteuid() != 0:
        return "booting systemd in a container needs root"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is missing (Debian's systemd-container)"
    if shutil.which("nsenter") is None:
        return "nsenter is missing (util-linux)"
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            return "the kernel has no overlayfs"
    return None


def docsBlocks():
    """
    The shell blocks of docs/deployment.md that are marked to run in the
    booted systemd (a C{<!-- run: NAME -->} line before the block), by
    name: the test runs the page's own commands.
    """
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    return {
        name: block
        for name, block in re.findall(r"<!-- run: ([\w-]+) -->\n\n```sh\n(.*?)```", text, re.S)
    }


def containerInit(nspawn):
    """
    The container's init: the child of the C{nspawn} process that is PID 1
    in a PID namespace of its own, or L{None} while there is none yet. Its
    first child can be a helper that nspawn starts first and that exits at
    once; entering that one's namespaces fails.
    """
    children = []
    for task in os.listdir(f"/proc/{nspawn}/task"):
        with open(f"/proc/{nspawn}/task/{task}/children") as f:
            children += f.read().split()
    for child in children:
        try:
            with open(f"/proc/{child}/status") as f:
                status = f.read()
        except FileNotFoundError:
            continue
        if re.search(r"^NSpid:\s+\d+\s+1$", status, re.M):
            return int(child)
    return None


class Container:
    """
    A systemd booted in a container over a throwaway overlay of C{/}.
    """

    def __init__(self):
        self.upper = tempfile.mkdtemp(prefix="sockservice-overlay-")
        self.root = tempfile.mkdtemp(prefix="sockservice-root-")
        self.mounted = []
        self.nspawn = None
        self.pid = None
        self.console = None

    def mount(self):
        done = run("mount", "-t", "tmpfs", "tmpfs", self.upper)
        if done.returncode:
            raise SkipTest(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self.mounted.append(self.upper)
        os.makedirs(os.path.join(self.upper, "u"))
        os.makedirs(os.path.join(self.upper, "w"))
        done = run("mount", "-t", "overlay", "overlay", "-o",
                   f"lowerdir=/,upperdir={self.upper}/u,workdir={self.upper}/w", self.root)
        if done.returncode:
            raise SkipTest(f"cannot mount an overlay of /: {done.stderr.strip()}")
        self.mounted.append(self.root)
        etc = os.path.join(self.root, "etc")
        os.remove(os.path.join(etc, "machine-id"))
        with open(os.path.join(etc, "machine-id"), "w") as f:
            f.write(run("systemd-id128", "new").stdout)
        for unit in MASKED:
            link = os.path.join(etc, "systemd", "system", unit)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink("/dev/null", link)

    def boot(self, name):
        self.console = tempfile.TemporaryFile()
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", self.root, "--boot", "--register=no", "--keep-unit",
             "--private-network", f"--machine={name}", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while self.pid is None and time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn ended: {self.consoleText()}")
            self.pid = containerInit(self.nspawn.pid)
            time.sleep(0.1)
        if self.pid is None:
            raise AssertionError(f"no container init under systemd-nspawn: {self.consoleText()}")
        # Until systemd has its bus up, systemctl cannot even ask.
        deadline = time.monotonic() + 90
        state = ""
        while state not in ("running", "degraded") and time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running --wait", timeout=90).stdout.strip()
            time.sleep(0.2)
        if state not in ("running", "degraded"):
            raise AssertionError(f"systemd did not come up ({state}): {self.consoleText()}")

    def consoleText(self):
        self.console.seek(0)
        return self.console.read().decode("utf-8", "replace")[-4000:]

    def sh(self, script, timeout=120, env=()):
        """
        Run C{script} with sh as root inside, with a clean environment.
        """
        return run(
            "nsenter", "-t", str(self.pid), "-a", "env", "-i", f"PATH={INSIDE_PATH}",
            "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", *env,
            "sh", "-c", script, timeout=timeout,
        )

    def tearDown(self):
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.pid is not None:
                try:
                    self.sh("systemctl poweroff", timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=30)
        for path in reversed(self.mounted):
            run("umount", path)
        for path in (self.root, self.upper):
            if not os.path.ismount(path):
                shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir("/run/systemd/nspawn")
        except OSError:
            pass
        if self.console is not None:
            self.console.close()


class RealSystemdTests(SynchronousTestCase):
    reason = whyNotBootable()
    if reason:
        skip = reason

    def setUp(self):
        self.container = Container()
        self.addCleanup(self.container.tearDown)
        self.container.mount()
        # The container has no network: pip installs from these (in its
        # /root: it has a /tmp of its own).
        self.wheels = "/root/wheels"
        done = run(sys.executable, "-m", "pip", "download", "-q", "-d",
                   self.container.root + self.wheels, CHECKOUT, "hatchling>=1.18", timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr)
        # The checkout may be under /tmp, which the container does not
        # share: install from a copy in its /root.
        ignored = shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "_trial_temp*"
        )
        shutil.copytree(CHECKOUT, self.container.root + INSIDE_CHECKOUT, ignore=ignored)
        self.container.boot(f"sockservice-test-{os.getpid()}")
        self.blocks = docsBlocks()

    def sh(self, script, timeout=120, check=True):
        done = self.container.sh(
            script, timeout=timeout,
            env=("PIP_NO_INDEX=1", f"PIP_FIND_LINKS={self.wheels}"),
        )
        if check:
            self.assertEqual(done.returncode, 0, f"{script}\n{done.stdout}{done.stderr}")
        return done.stdout

    def docs(self, name):
        """
        Run the docs' block C{name} inside, from the checkout.
        """
        return self.sh(f"cd {INSIDE_CHECKOUT}\n" + self.blocks[name].replace("sudo ", ""))

    def probe(self, *args):
        """
        Run the client L{PROBE} inside with C{args}; return what it printed.
        """
        return self.sh(f"/opt/sockservice/bin/python /root/probe.py {' '.join(args)}").strip()

    def mainPID(self):
        return self.sh("systemctl show -p MainPID --value sockservice").strip()

    def exposure(self):
        output = self.sh("systemd-analyze security --no-pager sockservice.service", check=False)
        return float(EXPOSURE.search(output).group(1))

    def waitFor(self, script, expected, seconds=30):
        deadline = time.monotonic() + seconds
        while True:
            output = self.sh(script, check=False).strip()
            if output == expected or time.monotonic() > deadline:
                return output
            time.sleep(0.3)

    def test_deployment(self):
        with open(os.path.join(self.container.root, "root", "probe.py"), "w") as f:
            f.write(PROBE)
        with open(os.path.join(self.container.root, "root", "certificate.py"), "w") as f:
            f.write(MAKE_CERTIFICATE)

        # Plain: installed, active, answering.
        self.docs("install")
        self.assertEqual(self.sh("systemctl is-active sockservice").strip(), "active")
        self.assertEqual(self.probe("greet", "12345"), repr(b"connect\nInformation Received\n"))
        self.assertIn('Status: "listening on 0.0.0.0:12345"', self.docs("status"))
        self.assertEqual(self.docs("health"), "ok\n")
        self.assertLessEqual(self.exposure(), 1.2)

        # TLS with a key only root reads, passed as a credential; under
        # MemoryDenyWriteExecute=yes.
        self.sh("mkdir -p /etc/sockservice/tls && /opt/sockservice/bin/python "
                "/root/certificate.py /etc/sockservice/tls/key.pem /etc/sockservice/tls/cert.pem")
        self.assertEqual(self.sh("stat -c %a:%U /etc/sockservice/tls/key.pem").strip(),
                         "600:root")
        self.docs("tls")
        self.assertEqual(
            self.sh("systemctl show -p MemoryDenyWriteExecute --value sockservice").strip(),
            "yes",
        )
        tls = self.probe("tls", "12346", "/etc/sockservice/tls/cert.pem")
        fingerprint, greeting = tls.split(" ", 1)
        self.assertEqual(greeting, repr(b"connect\n"))

        # A certificate renewed with the same key, installed by the docs'
        # renewal hook, reaches new handshakes on reload.
        self.sh("mkdir /root/lineage && /opt/sockservice/bin/python /root/certificate.py "
                "/etc/sockservice/tls/key.pem /root/lineage/fullchain.pem")
        pid = self.mainPID()
        self.sh("export RENEWED_LINEAGE=/root/lineage\n" + self.blocks["renewal-hook"])
        renewed, greeting = self.probe("tls", "12346", "/etc/sockservice/tls/cert.pem").split(" ", 1)
        self.assertNotEqual(renewed, fingerprint)
        self.assertEqual(self.mainPID(), pid)

        # Reload (the docs' command) with a client connected across it.
        self.sh("printf 'greeting = \"hello again\"\\nack = \"noted\"\\n' "
                ">> /etc/sockservice/sockservice.toml")
        self.assertEqual(self.blocks["reload"], "sudo systemctl reload sockservice\n")
        self.assertEqual(
            self.probe("across", "12345", "systemctl", "reload", "sockservice"),
            f"{b'connect' + bytes([10])!r} {b'noted' + bytes([10])!r} 0 ''",
        )
        self.assertEqual(self.probe("greet", "12345"), repr(b"hello again\nnoted\n"))
        self.assertEqual(self.mainPID(), pid)
        journal = self.sh("journalctl -u sockservice --no-pager -o cat")
        self.assertIn("reloaded /etc/sockservice/sockservice.toml: greeting, ack changed", journal)
        self.assertIn("certificate of ssl:12346", journal)
        self.assertNotIn("Traceback", journal)

        # A reload of a bad file changes nothing and logs one error, which
        # journalctl -p warning shows (the lines carry their priority) while
        # it leaves out the info lines.
        self.sh("cp /etc/sockservice/sockservice.toml /root/before.toml && "
                "echo 'max-line = \"x\"' >> /etc/sockservice/sockservice.toml && "
                "systemctl reload sockservice && "
                "cp /root/before.toml /etc/sockservice/sockservice.toml")
        warnings = self.sh("journalctl -u sockservice -p warning --no-pager -o cat")
        self.assertIn("reload failed, nothing changed: /etc/sockservice/sockservice.toml: "
                      "max-line: ", warnings)
        self.assertNotIn("reloaded /etc/sockservice/sockservice.toml", warnings)
        self.assertNotIn("connection opened", warnings)
        self.assertEqual(self.probe("greet", "12345"), repr(b"hello again\nnoted\n"))

        # kill -9 is restarted.
        self.sh(f"kill -9 {pid}")
        restarted = self.waitFor(
            "systemctl is-active sockservice; systemctl show -p NRestarts --value sockservice",
            "active\n1",
        )
        self.assertEqual(restarted, "active\n1")
        self.assertNotEqual(self.mainPID(), pid)
        self.assertEqual(self.probe("greet", "12345"), repr(b"hello again\nnoted\n"))

        # A bad config file: one line in the journal naming file and key,
        # status 2, not restarted.
        self.sh("cp /etc/sockservice/sockservice.toml /root/good.toml && "
                "echo 'max-lines = 5' >> /etc/sockservice/sockservice.toml")
        self.sh("systemctl restart sockservice", check=False)
        time.sleep(2.5)  # past RestartSec=2: no retry
        self.assertEqual(
            self.sh("systemctl show -p ExecMainStatus -p NRestarts -p ActiveState sockservice"),
            "NRestarts=0\nExecMainStatus=2\nActiveState=failed\n",
        )
        self.assertIn(
            "twistd sockservice: /etc/sockservice/sockservice.toml: max-lines: unknown key "
            "(see twistd sockservice --help)\n",
            self.sh("journalctl -u sockservice --no-pager -o cat"),
        )
        self.sh("cp /root/good.toml /etc/sockservice/sockservice.toml && "
                "systemctl restart sockservice")

        # Stop drains: the line sent before the stop is acknowledged, then
        # the server closes.
        self.assertEqual(
            self.probe("stop", "12345", "systemctl", "stop", "sockservice"),
            f"{b'hello again' + bytes([10])!r} {b'noted' + bytes([10])!r} 0",
        )
        self.assertEqual(self.sh("systemctl is-active sockservice", check=False).strip(),
                         "inactive")

        # Socket-activated: started by the first connection.
        self.docs("install-socket")
        self.assertEqual(self.sh("systemctl is-active sockservice", check=False).strip(),
                         "inactive")
        self.assertEqual(self.sh("systemctl is-active sockservice.socket").strip(), "active")
        self.assertEqual(self.probe("greet", "12345"), repr(b"hello again\nnoted\n"))
        self.assertEqual(self.sh("systemctl is-active sockservice").strip(), "active")
        self.assertLessEqual(self.exposure(), 0.7)

        self.docs("uninstall")
        self.assertEqual(
            self.sh("for p in /etc/sockservice /opt/sockservice "
                    "/etc/systemd/system/sockservice.service; do test -e $p && echo $p; done; "
                    "systemctl is-active sockservice sockservice.socket", check=False),
            "inactive\ninactive\n",
        )
