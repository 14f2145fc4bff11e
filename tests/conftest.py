"""
Under pytest, tests run in a temporary working directory, as trial runs them
in its own: C{TestCase.mktemp} makes its directories relative to it, so no
test leaves files in the checkout.
"""

import os
import shutil
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def temporaryWorkingDirectory():
    checkout = os.getcwd()
    directory = tempfile.mkdtemp(prefix="sockservice-tests-")
    os.chdir(directory)
    yield directory
    os.chdir(checkout)
    shutil.rmtree(directory, ignore_errors=True)
