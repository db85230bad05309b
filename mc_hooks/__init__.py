"""Mission Control's plugin system: hook markers, specs, config loading and the plugin manager.

Plugin authors need only ``from mc_hooks import hookimpl``.
"""

import pluggy

PROJECT_NAME = "mc_hooks"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]
