"""The lab: every role in one process with etc/imsp2pd.toml (`twistd -ny twistd.tac`).

$IMSP2P_CONFIG names another config; $IMSP2P_ROLES another set of roles.
"""

import os
import sys

from twisted.application.service import Application
from twisted.internet import reactor
from twisted.logger import ILogObserver

from imsp2pd.config import ConfigError
from imsp2pd.daemon import build, plan
from imsp2pd.logs import json_observer

try:
    _plan = plan(os.environ.get("IMSP2P_ROLES", "all"), None)
except ConfigError as e:
    sys.stderr.write(f"imsp2p: {e}\n")
    raise SystemExit(2) from None

application = Application("imsp2pd")
if _plan.config["daemon"]["log_format"] == "json":
    application.setComponent(ILogObserver, json_observer())
build(_plan, reactor).setServiceParent(application)
