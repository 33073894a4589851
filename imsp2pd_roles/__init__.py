"""The role plugins of imsp2pd, installed as the package ``imsp2pd_roles``.

One module per role, each holding an object that provides
``imsp2pd.roles.IRole`` and ``twisted.plugin.IPlugin``. A third party adds a
role by dropping a module into an ``imsp2pd_roles/`` folder (without
``__init__.py``) anywhere on sys.path: Twisted's plugin system finds it there.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
