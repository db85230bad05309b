"""The plugin manager: loads plugins and calls hooks with each plugin isolated from the others.

Plugins come from three routes, in this order: the built-ins (by name, :data:`BUILTIN_PLUGINS`),
modules named by dotted path in config.yaml, and installed distributions' ``mc_hooks`` entry
points. Disabled names are blocked before anything loads.

Hooks are called through :attr:`PluginHost.hook`, which works like pluggy's ``pm.hook`` (same
keyword call, same order, firstresult semantics) but runs each implementation on its own:

* every implementation acts under its own name (the audit trail says which plugin did what);
* ``on_done_sentinel``, ``on_worker_death`` and ``on_escalate`` implementations each run in one
  transaction (a savepoint inside the host's), rolled back if they raise;
* each implementation runs for at most the host's ``hook_timeout`` seconds, then is stopped with
  :class:`~mc_hooks.deadline.HookTimeout` (inside its own transaction, which rolls back), which counts as
  raising;
* a plugin that raises is recorded as an error event naming plugin and hook; then the
  ``before_*`` hooks and ``verify_done_claim`` fail closed (the exception is a veto), the ``on_done_sentinel`` /
  ``on_worker_death`` call raises :class:`PluginFailed` for the host to park the ticket, and
  ``on_escalate`` / ``on_ticket_event`` go on to the other implementations.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from mc_hooks import PROJECT_NAME, hookspecs
from mc_hooks.deadline import HookTimeout, time_limit
from mc_hooks.settings import ConfigError, Section

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

ENTRY_POINT_GROUP = "mc_hooks"

# name -> "module:Class"; the class is instantiated with the plugin's config section.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("done_verifier", "mc_plugins.done_verifier:DoneVerifier"),
    ("review_loop", "mc_plugins.review_loop:ReviewLoop"),
    ("dead_worker_retry", "mc_plugins.dead_worker_retry:DeadWorkerRetry"),
    ("operator_guard", "mc_plugins.operator_guard:OperatorGuard"),
    ("killswitch", "mc_plugins.killswitch:KillSwitch"),
    ("circuit_breaker", "mc_plugins.circuit_breaker:CircuitBreaker"),
    ("notify", "mc_plugins.notify:Notify"),
    ("github", "mc_plugins.github:GitHub"),
)
BUILTIN_NAMES = tuple(name for name, _ in BUILTIN_PLUGINS)
OPT_IN = frozenset({"notify", "github"})  # built-ins loaded only when config.yaml has a section for them

FAIL_CLOSED = frozenset({"before_auto_action", "before_operator_reopen", "verify_done_claim"})
MUST_SUCCEED = frozenset({"on_done_sentinel", "on_worker_death"})
TRANSACTIONAL = MUST_SUCCEED | {"on_escalate", "on_ticket_event"}


class PluginFailed(Exception):
    """An ``on_done_sentinel`` / ``on_worker_death`` implementation raised; its changes rolled back."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin {plugin} failed in {hook}: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


class Veto(str):
    """A veto reason that also says which plugin gave it."""

    plugin: str = ""

    def __new__(cls, reason: str, plugin: str) -> Veto:
        veto = super().__new__(cls, reason)
        veto.plugin = plugin
        return veto


class PluginsConfig(Protocol):
    """What the manager needs from the host's configuration."""

    @property
    def file(self) -> str: ...

    @property
    def plugins(self) -> dict[str, dict[str, Any]]: ...

    @property
    def hook_timeout(self) -> float | None: ...

    def plugin_section(self, name: str) -> Section: ...


class HostFacade(Protocol):
    """What the hook caller needs from the host's controller facade."""

    actor: str

    def plugin_scope(self, plugin: str, hook: str) -> AbstractContextManager[None]: ...

    def record_plugin_error(self, plugin: str, hook: str, error: BaseException, ticket: Any) -> None: ...


@dataclass
class PluginInfo:
    """A registered plugin: its name, where it came from, and the hooks it implements."""

    name: str
    source: str
    plugin: object
    hooks: list[str] = field(default_factory=list)


class HookCallError(TypeError):
    """The host called a hook with arguments its spec does not declare: a host bug, raised before any
    plugin runs (never recorded against a plugin)."""


class _HookCall:
    __slots__ = ("name", "impls", "firstresult", "mode", "transactional", "calls", "argnames", "limit")

    def __init__(
        self,
        name: str,
        impls: list[pluggy.HookImpl],
        firstresult: bool,
        argnames: tuple[str, ...],
        limit: float | None = None,
    ) -> None:
        self.name = name
        self.limit = limit
        self.argnames = frozenset(argnames)
        self.impls = impls  # already in call order
        self.firstresult = firstresult
        self.mode = "veto" if name in FAIL_CLOSED else "must" if name in MUST_SUCCEED else "notify"
        self.transactional = name in TRANSACTIONAL
        self.calls = [(impl.function, tuple(impl.argnames), impl.plugin_name) for impl in impls]

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs.keys() != self.argnames:
            raise self._wrong_arguments(kwargs)
        controller: HostFacade = kwargs["controller"]
        results = []
        for function, argnames, plugin in self.calls:
            previous = controller.actor
            try:
                if self.transactional:
                    with controller.plugin_scope(plugin, self.name), time_limit(self.limit):
                        result = function(*[kwargs[name] for name in argnames])
                else:
                    controller.actor = plugin
                    with time_limit(self.limit):
                        result = function(*[kwargs[name] for name in argnames])
            except (Exception, HookTimeout) as exc:
                controller.actor = previous
                controller.record_plugin_error(plugin, self.name, exc, kwargs.get("ticket"))
                if self.mode == "veto":
                    return Veto(f"{plugin} failed in {self.name} ({type(exc).__name__}: {exc}); failing closed", plugin)
                if self.mode == "must":
                    raise PluginFailed(plugin, self.name, exc) from exc
                continue
            controller.actor = previous
            if result is None:
                continue
            if self.firstresult:
                if self.mode == "veto":
                    if not isinstance(result, str) or not result:
                        continue  # only a non-empty string vetoes
                    return Veto(result, plugin)
                return result
            results.append(result)
        return None if self.firstresult else results

    def _wrong_arguments(self, kwargs: dict[str, Any]) -> HookCallError:
        caller = sys._getframe(2)
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
        missing = sorted(self.argnames - kwargs.keys())
        unknown = sorted(kwargs.keys() - self.argnames)
        problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(unknown)}"] * bool(unknown)
        expected = ", ".join(sorted(self.argnames))
        return HookCallError(f"{where}: {self.name}() called with {'; '.join(problems)} (expected {expected})")


class _HookRelay:
    def __init__(self, calls: dict[str, _HookCall]) -> None:
        self.__dict__.update(calls)


class PluginHost:
    """The loaded plugins of one config, and :attr:`hook` to call them."""

    def __init__(self, pm: pluggy.PluginManager, infos: list[PluginInfo], limit: float | None = None) -> None:
        """The hook relay over ``pm``'s plugins; each implementation may run ``limit`` seconds."""
        self.pm = pm
        self.infos = infos
        calls = {}
        for name in _spec_names():
            caller = getattr(pm.hook, name)
            opts = caller.spec.opts if caller.spec else {}
            argnames = tuple(caller.spec.argnames) if caller.spec else ()
            impls = list(reversed(caller.get_hookimpls()))
            calls[name] = _HookCall(name, impls, bool(opts.get("firstresult")), argnames, limit)
        self.hook = _HookRelay(calls)
        order = {name: [impl.plugin_name for impl in call.impls] for name, call in calls.items()}
        for info in infos:
            info.hooks = [name for name, plugins in order.items() if info.name in plugins]

    def call_order(self, hook: str) -> list[str]:
        """Plugin names in the order ``hook`` calls them."""
        return [impl.plugin_name for impl in getattr(self.hook, hook).impls]


def _spec_names() -> list[str]:
    return [
        name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if fn.__module__ == hookspecs.__name__
    ]


def _instantiate(obj: Any, section: Section) -> Any:
    """A class plugin built with its settings (a setting it requires and does not find is a one-line
    error); a module plugin as it is (it takes no settings)."""
    if not inspect.isclass(obj):
        extra = sorted(set(map(str, section)) - {"enabled"})
        if extra:
            raise section.error(
                extra[0], "no settings: a module plugin takes none (make it a class that reads them in its constructor)"
            )
        return obj
    try:
        plugin_class: Any = obj
        return plugin_class(section)
    except KeyError as exc:
        raise section.error(str(exc.args[0]) if exc.args else None, "a value (the plugin requires it)") from None
    except ConfigError:
        raise
    except (Exception, SystemExit) as exc:
        raise ConfigError(
            f"{section.file}: {section.path}: the plugin failed to start: {type(exc).__name__}: {exc}"
        ) from None


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _fresh_section(config: PluginsConfig, name: str) -> Section:
    section = config.plugin_section(name)
    section.flag("enabled", True)
    return section


def _known_names(entry_points: dict[str, Any]) -> str:
    names = list(BUILTIN_NAMES) + [f"{name} (entry point)" for name in sorted(entry_points)]
    return ", ".join(names)


def load_plugins(config: PluginsConfig, extra: list[tuple[str, object]] | None = None) -> PluginHost:
    """Load and validate every enabled plugin of ``config``; raises ConfigError on any problem.

    ``extra`` registers objects directly (tests use it to add a plugin under a name).
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    for name, settings in config.plugins.items():
        if settings.get("enabled", True) is False:
            pm.set_blocked(name)

    def register(name: str, plugin: object, source: str) -> None:
        try:
            pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise ConfigError(f"{config.file}: plugins.{name}: {exc}") from None
        infos.append(PluginInfo(name, source, plugin))

    builtin_targets = dict(BUILTIN_PLUGINS)
    for name, target in BUILTIN_PLUGINS:
        if pm.is_blocked(name) or (name in OPT_IN and name not in config.plugins):
            continue
        section = _fresh_section(config, name)
        register(name, _instantiate(_import_target(target), section), f"built-in ({target})")
        section.finish()

    entry_points = _entry_points()
    beside = str(Path(config.file).resolve().parent) if config.file else ""
    if beside and beside not in sys.path:  # a plugin module saved beside config.yaml imports by its name
        sys.path.insert(0, beside)
    for name in config.plugins:
        if name in builtin_targets or name in entry_points or pm.is_blocked(name):
            continue
        try:
            obj = _import_target(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.partition(":")[0].startswith(exc.name):
                raise ConfigError(
                    f"{config.file}: plugins.{name}: no built-in plugin, entry point or importable module "
                    f"of that name (known: {_known_names(entry_points)})"
                ) from None
            raise ConfigError(f"{config.file}: plugins.{name}: importing it failed: {exc}") from None
        except AttributeError as exc:
            raise ConfigError(f"{config.file}: plugins.{name}: {exc}") from None
        except (Exception, SystemExit) as exc:  # a plugin calling sys.exit() must not end `mc run` silently
            raise ConfigError(
                f"{config.file}: plugins.{name}: importing it failed: {type(exc).__name__}: {exc}"
            ) from None
        section = _fresh_section(config, name)
        register(name, _instantiate(obj, section), f"config.yaml ({name})")
        section.finish()

    for name, ep in sorted(entry_points.items()):
        if pm.is_blocked(name) or pm.has_plugin(name):
            continue
        try:
            obj = ep.load()
        except (Exception, SystemExit) as exc:
            raise ConfigError(f"entry point {name} ({ep.value}): loading failed: {type(exc).__name__}: {exc}") from None
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        section = _fresh_section(config, name)
        register(name, _instantiate(obj, section), f"entry point ({dist}: {ep.value})")
        section.finish()

    for name, plugin in extra or ():
        register(name, plugin, "registered directly")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = ", ".join(_spec_names())
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise ConfigError(f"plugin {name}: {exc} (known hooks: {known})") from None
    for caller_name in _spec_names():
        for impl in getattr(pm.hook, caller_name).get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise ConfigError(
                    f"plugin {impl.plugin_name}: {caller_name} is a hook wrapper; Mission Control "
                    "calls each implementation on its own, so wrappers are not supported"
                )
    return PluginHost(pm, infos, config.hook_timeout)
