"""
Under pytest, tests run in a temporary working directory, as trial runs them
in its own: C{TestCase.mktemp} makes its directories relative to it, and
hypothesis keeps its examples there, so no test leaves files in the checkout.
"""

import os
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir


def pytest_configure(config):
    config.sockserviceCheckout = os.getcwd()
    config.sockserviceScratch = tempfile.mkdtemp(prefix="sockservice-tests-")
    os.chdir(config.sockserviceScratch)
    set_hypothesis_home_dir(os.path.join(config.sockserviceScratch, ".hypothesis"))


def pytest_unconfigure(config):
    os.chdir(config.sockserviceCheckout)
    shutil.rmtree(config.sockserviceScratch, ignore_errors=True)
