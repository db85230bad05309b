"""Mission Control's built-in policy plugins, one module each (see mc_hooks.manager.BUILTIN_PLUGINS)."""
