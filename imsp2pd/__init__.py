"""imsp2pd: IMS-controlled, DRM-protected content delivery over BitTorrent swarms."""

from imsp2pd.accel import install as _install_accel

__version__ = "0.1.0"

# the compiled copies of the hot modules, where built and current (imsp2pd.accel)
_install_accel()
