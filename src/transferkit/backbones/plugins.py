"""Backbone plugins: entry points in the ``transferkit.backbones`` group.

A third-party distribution declares, in its ``pyproject.toml``::

    [project.entry-points."transferkit.backbones"]
    my_net = "my_package.backbones:my_net"

where ``my_net`` is a :class:`~transferkit.Backbone` or a zero-argument callable returning one,
whose ``name`` equals the entry point's name. Entry points are only *recorded* at discovery;
the plugin is imported when its backbone is first looked up, so a broken plugin cannot break
the built-ins or other plugins. A plugin whose name is already taken (by a built-in, by a
backbone registered in code, or by an earlier plugin in name order) is skipped, unimported, with
a :class:`~transferkit.errors.TransferkitWarning`; the registered backbone stays.
"""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points

from transferkit.backbones.spec import Backbone
from transferkit.errors import PluginLoadError

__all__ = ["DISABLE_ENV_VAR", "ENTRY_POINT_GROUP", "discover", "load"]

ENTRY_POINT_GROUP = "transferkit.backbones"
#: Set to ``1`` (or ``true``/``yes``) to switch plugin discovery off.
DISABLE_ENV_VAR = "TRANSFERKIT_DISABLE_PLUGINS"


def plugins_disabled() -> bool:
    """Whether the user switched plugin discovery off through the environment."""
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def discover() -> list[EntryPoint]:
    """The installed entry points of the group, without importing any of them."""
    if plugins_disabled():
        return []
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def describe(entry_point: EntryPoint) -> str:
    """Names an entry point and the distribution that declares it, for messages."""
    dist = entry_point.dist
    origin = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"entry point {entry_point.name!r} = {entry_point.value!r} from {origin}"


def load(entry_point: EntryPoint) -> Backbone:
    """Imports a plugin and returns its backbone.

    Raises:
        PluginLoadError: the import fails, the object is not a backbone (or a callable
            returning one), or its name differs from the entry point's.
    """
    try:
        target = entry_point.load()
        backbone = target() if callable(target) else target
    except Exception as exc:
        msg = (
            f"Backbone plugin failed to load ({describe(entry_point)}): "
            f"{type(exc).__name__}: {exc}. Fix or uninstall that distribution, or set "
            f"{DISABLE_ENV_VAR}=1 to switch plugins off."
        )
        raise PluginLoadError(msg) from exc
    if not isinstance(backbone, Backbone):
        msg = (
            f"Backbone plugin ({describe(entry_point)}) must name a transferkit.Backbone or "
            f"a zero-argument callable returning one. Received: {backbone!r}"
        )
        raise PluginLoadError(msg)
    if backbone.name != entry_point.name:
        msg = (
            f"Backbone plugin ({describe(entry_point)}) returned a backbone named "
            f"{backbone.name!r}; the entry point's name and the backbone's name must match."
        )
        raise PluginLoadError(msg)
    return backbone
