"""
The files in deploy/: install.sh into a temporary root, the units it installs
checked by systemd-analyze (verify, security), and the cloud-init user data
checked by cloud-init's schema.
"""

import glob
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from sockservice.wire.addresses import BACKLOG
from tests.realserver import LISTENING

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(CHECKOUT, "deploy")
UNITS = os.path.join("etc", "systemd", "system")
EXPOSURE = re.compile(r"Overall exposure level for sockservice\.service: (\d+\.\d+)")


def run(*argv):
    """
    Run a command; return its exit status and its output, stderr included.
    """
    done = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120
    )
    return done.returncode, done.stdout


def ourFiles(root):
    """
    Every path under C{root}'s /etc and /opt/sockservice/bin, relative to root.
    """
    found = set()
    for top in ("etc", os.path.join("opt", "sockservice", "bin")):
        for directory, _, names in os.walk(os.path.join(root, top)):
            found.update(os.path.relpath(os.path.join(directory, n), root) for n in names)
    return found


class InstallTests(SynchronousTestCase):
    """
    install.sh into a temporary root holding a copy of the host's system
    units, so systemd-analyze --root finds both the targets and ExecStart.
    """

    if shutil.which("systemd-analyze") is None:
        skip = "systemd-analyze is missing (.ci/run installs systemd)"

    def setUp(self):
        # Outside the checkout, which install.sh builds the package from.
        self.root = tempfile.mkdtemp(prefix="sockservice-root-")
        self.addCleanup(shutil.rmtree, self.root)
        shutil.copytree(
            os.path.realpath("/lib/systemd/system"),
            os.path.join(self.root, "usr", "lib", "systemd", "system"),
            symlinks=True,
        )
        # ExecReload runs /bin/kill and /bin/sleep, which systemd-analyze
        # verify looks for.
        os.makedirs(os.path.join(self.root, "bin"))
        for command in ("kill", "sleep"):
            shutil.copy(shutil.which(command, path="/bin:/usr/bin"), os.path.join(self.root, "bin"))

    def install(self, *options):
        status, output = run("sh", os.path.join(DEPLOY, "install.sh"), "--root", self.root, *options)
        self.assertEqual(status, 0, output)
        return output

    def assertVerified(self, *units):
        """
        systemd-analyze verify passes C{units} without a single warning.
        """
        self.assertEqual(run("systemd-analyze", "verify", f"--root={self.root}", *units), (0, ""))

    def exposure(self):
        status, output = run(
            "systemd-analyze", "security", "--offline=true", f"--root={self.root}",
            "--threshold=20", "sockservice.service",
        )
        self.assertEqual(status, 0, output)
        return float(EXPOSURE.search(output).group(1))

    def checkPlain(self, greeting=b"connect\n"):
        self.assertVerified("sockservice.service")
        self.assertLessEqual(self.exposure(), 2.0)
        self.assertTrue(
            os.path.islink(os.path.join(self.root, UNITS, "multi-user.target.wants", "sockservice.service"))
        )
        venv = os.path.join(self.root, "opt", "sockservice")
        # The service cannot write the plugin cache, so install.sh made it.
        self.assertTrue(
            glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "twisted", "plugins", "dropin.cache"))
        )
        status, output = run(os.path.join(venv, "bin", "twistd"), "sockservice", "--help")
        self.assertEqual(status, 0, output)
        self.assertIn("--drain-timeout", output)
        self.checkExecStart(greeting)

    def checkExecStart(self, greeting):
        """
        The unit's ExecStart, with its default environment and the options
        file's, runs the installed twistd under the directepoll reactor with
        the installed sockservice.toml, and it serves.
        """
        unit = os.path.join(self.root, UNITS, "sockservice.service")
        with open(unit) as f:
            text = f.read()
        defaults = re.search(r"^Environment=(.*)$", text, re.M).group(1)
        environment = dict(item.split("=", 1) for item in defaults.split())
        with open(os.path.join(self.root, "etc", "sockservice", "sockservice.env")) as f:
            environment.update(
                line.split("=", 1) for line in f.read().splitlines()
                if line and not line.startswith("#")
            )
        # Free ports on loopback (its metrics too): OPTIONS win over
        # sockservice.toml.
        environment["OPTIONS"] = (
            "--port 0 --interface 127.0.0.1 --metrics tcp:0:interface=127.0.0.1"
        )
        command = re.search(r"^ExecStart=(.+)$", text, re.M).group(1)
        command = re.sub(r"\$\{(\w+)\}", lambda m: environment[m.group(1)], command)
        command = re.sub(r"\$(\w+)", lambda m: environment[m.group(1)], command)
        command = command.replace(" /etc/", f" {self.root}/etc/")
        argv = shlex.split(command)
        argv[0] = self.root + argv[0]
        self.assertEqual(argv[1:3], ["--reactor", "directepoll"])
        server = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root
        )
        self.addCleanup(server.stdout.close)
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)
        output = b""
        deadline = time.monotonic() + 30
        # It listens before twistd logs its start (and the reactor) itself.
        while not (LISTENING.search(output) and b"reactor class" in output) \
                and time.monotonic() < deadline:
            if select.select([server.stdout], [], [], 1)[0]:
                output += os.read(server.stdout.fileno(), 65536)
        listening = LISTENING.search(output)
        self.assertIsNotNone(listening, output)
        self.assertIn(b"reactor class: sockservice.fastpath.directepoll.DirectEPollReactor", output)
        port = int(listening.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"hello\n")
            received = b""
            while len(received) < len(greeting) + 21:
                chunk = client.recv(100)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(received, greeting + b"Information Received\n")

    def checkSocketActivated(self):
        self.assertVerified("sockservice.socket", "sockservice.service")
        self.assertLessEqual(self.exposure(), 2.0)
        self.assertTrue(
            os.path.islink(os.path.join(self.root, UNITS, "sockets.target.wants", "sockservice.socket"))
        )
        self.assertFalse(os.path.lexists(os.path.join(self.root, UNITS, "multi-user.target.wants")))
        status, output = run(
            "systemd-analyze", "cat-config", f"--root={self.root}",
            os.path.join("systemd", "system", "sockservice.service"),
        )
        self.assertIn(
            "\nExecStart=\nExecStart=/opt/sockservice/bin/twistd --reactor ${REACTOR} -n "
            "--pidfile= sockservice --config /etc/sockservice/sockservice.toml "
            "--listen systemd:domain=INET:name=sockservice $OPTIONS\n",
            output,
        )

    def test_installSwitchReinstallUninstall(self):
        """
        An upgrade over an options file of the days before sockservice.toml
        moves its MODE, PORT and INTERFACE into a new sockservice.toml; the
        plain service, then the socket-activated one, each verified and
        rated; running it again (back to plain) leaves the same files as the
        first time, an edited sockservice.toml kept; --uninstall removes
        them all. One test, as every install makes a venv.
        """
        config = os.path.join(self.root, "etc", "sockservice")
        os.makedirs(config)
        options = os.path.join(config, "sockservice.env")
        with open(options, "w") as f:
            f.write("MODE=greet\nPORT=4000\nINTERFACE=127.0.0.1\nOPTIONS=--max-line 100\n")
        output = self.install()
        self.assertIn(
            f"install.sh: moved MODE PORT INTERFACE from {options} to {config}/sockservice.toml\n",
            output,
        )
        with open(options) as f:
            self.assertEqual(
                f.read(),
                "# moved to sockservice.toml: MODE=greet\n# moved to sockservice.toml: PORT=4000\n"
                "# moved to sockservice.toml: INTERFACE=127.0.0.1\nOPTIONS=--max-line 100\n",
            )
        toml = os.path.join(config, "sockservice.toml")
        with open(toml) as f:
            self.assertTrue(f.read().startswith(
                '# Moved from sockservice.env by install.sh.\nmode = "greet"\nport = 4000\n'
                'interface = "127.0.0.1"\n\n# sockservice\'s options'
            ))
        self.checkPlain()
        installed = ourFiles(self.root)
        with open(toml, "a") as f:
            f.write('greeting = "edited"\n')
        self.install("--socket")
        self.checkSocketActivated()
        self.install()
        self.checkPlain(greeting=b"edited\n")
        self.assertEqual(ourFiles(self.root), installed)
        with open(toml) as f:
            self.assertTrue(f.read().endswith('\ngreeting = "edited"\n'))
        status, output = run("sh", os.path.join(DEPLOY, "install.sh"), "--uninstall", "--root", self.root)
        self.assertEqual(status, 0, output)
        self.assertEqual(ourFiles(self.root), set())
        self.assertFalse(os.path.exists(os.path.join(self.root, "opt", "sockservice")))

    def test_badOption(self):
        status, output = run("sh", os.path.join(DEPLOY, "install.sh"), "--bogus")
        self.assertEqual(status, 2)
        self.assertEqual(
            output,
            "install.sh: unknown option --bogus\n"
            "usage: sh deploy/install.sh [--socket] [--uninstall] [--root DIR]\n",
        )


class SocketUnitTests(SynchronousTestCase):
    def test_backlogMatchesTheService(self):
        """
        The socket unit queues as many connections as the service would
        itself (--backlog's default), so socket activation drops no burst
        the service alone would take.
        """
        with open(os.path.join(DEPLOY, "sockservice.socket")) as f:
            backlogs = re.findall(r"^Backlog=(\d+)$", f.read(), re.M)
        self.assertEqual(backlogs, [str(BACKLOG)])


class FirewallPortTests(SynchronousTestCase):
    def ports(self, toml):
        """
        What install.sh's configured_ports finds in a sockservice.toml.
        """
        with open(os.path.join(DEPLOY, "install.sh")) as f:
            function = re.search(r"^configured_ports\(\) \{.*?^\}$", f.read(), re.M | re.S)
        config = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, config)
        with open(os.path.join(config, "sockservice.toml"), "w") as f:
            f.write(toml)
        script = f"{function.group()}\nconfig={shlex.quote(config)}\nconfigured_ports\n"
        return run("sh", "-c", script)

    def test_listenOnOneLine(self):
        """
        A one-line listen list opens its ports only: the metrics endpoint
        after it stays closed.
        """
        self.assertEqual(
            self.ports('listen = ["tcp:1111", "ssl:2222:privateKey=k.pem"]\n'
                       'metrics = "tcp:9101:interface=127.0.0.1"\n'),
            (0, "1111\n2222\n"),
        )

    def test_listenOnSeveralLines(self):
        self.assertEqual(
            self.ports('listen = [\n  "tcp6:3333",  # v6\n  "unix:/run/s",\n]\n'
                       'metrics = "tcp:9101"\n'),
            (0, "3333\n"),
        )

    def test_portOrDefault(self):
        self.assertEqual(self.ports("port = 4444\n"), (0, "4444\n"))
        self.assertEqual(self.ports("# port = 4444\n"), (0, "12345\n"))


class CloudInitTests(SynchronousTestCase):
    if shutil.which("cloud-init") is None:
        skip = "cloud-init is missing (.ci/run installs it)"

    def test_schema(self):
        self.assertEqual(
            run("cloud-init", "schema", "--config-file", os.path.join(DEPLOY, "cloud-init.yaml")),
            (0, f"Valid cloud-config: {os.path.join(DEPLOY, 'cloud-init.yaml')}\n"),
        )
