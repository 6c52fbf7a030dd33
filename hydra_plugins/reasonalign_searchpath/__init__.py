"""Hydra search-path plugin: adds the config directories of installed reasonalign method plugins.

A method plugin declares ``config_path = "pkg://my_plugin.conf"`` on its Method class and
registers the class under the ``reasonalign.methods`` entry-point group; this plugin puts that
path on Hydra's search path, so ``method=<its name>`` finds ``my_plugin/conf/method/<name>.yaml``.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ReasonalignMethodsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from reasonalign.methods.registry import plugin_search_paths

        for path in plugin_search_paths():
            search_path.append(provider="reasonalign-method-plugin", path=path)
