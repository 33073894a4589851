"""imsp2pd: IMS-controlled, DRM-protected content delivery over BitTorrent swarms."""

__version__ = "0.1.0"
