"""Log observers: readable text (twistd's default) or JSON lines.

``twistd --logger=imsp2pd.logs.json_observer imsp2p …`` logs JSON lines to
stdout; with ``twistd -ny twistd.tac`` the choice is ``[daemon] log_format``.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver, textFileLogObserver


def json_observer() -> ILogObserver:
    return jsonFileLogObserver(sys.stdout)  # type: ignore[return-value]


def text_observer() -> ILogObserver:
    return textFileLogObserver(sys.stdout)  # type: ignore[return-value]


def observer_for(log_format: str) -> ILogObserver:
    return json_observer() if log_format == "json" else text_observer()
