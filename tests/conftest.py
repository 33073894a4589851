"""Test-session set-up shared by every test.

trial's ``TestCase.mktemp`` makes paths relative to the working directory; run
the session in a temporary directory so no test writes into the checkout.
"""

import os

import pytest

# every message a process takes from imsp2pd.local_hops instead of decoding it
# is decoded too and compared (the daemons the tests start inherit this)
os.environ.setdefault("IMSP2P_CHECK_LOCAL_HOPS", "1")


@pytest.fixture(autouse=True, scope="session")
def _work_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory):
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)
