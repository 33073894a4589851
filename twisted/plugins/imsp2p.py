"""twistd's entry point: ``twistd imsp2p --role=ROLES``.

This file lives in ``twisted/plugins/`` (no ``__init__.py`` there), where
twistd looks for plugins on sys.path; the real code is in imsp2pd.daemon.
"""

from twisted.application.service import ServiceMaker

imsp2p = ServiceMaker(
    "imsp2pd",
    "imsp2pd.daemon",
    "IMS-controlled, DRM-protected content delivery over BitTorrent swarms",
    "imsp2p",
)
