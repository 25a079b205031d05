"""The backbone registry: names to :class:`~transferkit.Backbone` specs.

The storage is private; the public functions return copies or frozen specs. Built-ins are
registered at import; plugins are discovered on the first lookup, once.

On a name clash the registered backbone wins: a plugin whose entry point name is already taken
(by a built-in, by a backbone registered in code, or by an earlier plugin in name order) is
skipped with a :class:`~transferkit.errors.TransferkitWarning`. To replace a built-in on
purpose, call ``register_backbone(spec, overwrite=True)``.

keras-hub presets (``"keras_hub:<preset>"``, or the path of a local preset folder) are looked
up through :mod:`transferkit.backbones.hub` when the ``hub`` extra is installed; they are
listed, not stored, and their specs are made on first lookup.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import threading
import warnings
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint
from typing import Any, overload

import keras

from transferkit.backbones import hub as _hub
from transferkit.backbones import plugins as _plugins
from transferkit.backbones.builtin import BUILTIN_BACKBONES
from transferkit.backbones.spec import Backbone
from transferkit.errors import (
    BackboneExistsError,
    InvalidArgumentError,
    TransferkitWarning,
    UnknownBackboneError,
)

__all__ = ["BackboneRegistry", "get_backbone", "list_backbones", "register_backbone"]

Constructor = Callable[..., keras.Model]


class BackboneRegistry:
    """A mapping of names to backbones, with lazily discovered plugins.

    Args:
        backbones: the backbones to start with.
        discover_plugins: whether to look for entry points on first lookup.
        hub: whether keras-hub presets are looked up and listed (when keras-hub is
            installed). The default registry has them; defaults to False.
    """

    def __init__(
        self,
        backbones: Iterable[Backbone] = (),
        *,
        discover_plugins: bool = True,
        hub: bool = False,
    ):
        self._backbones: dict[str, Backbone] = {}
        self._pending: dict[str, EntryPoint] = {}
        self._discovered = not discover_plugins
        self._hub = hub
        self._hub_specs: dict[str, Backbone] = {}
        self._lock = threading.RLock()
        for backbone in backbones:
            self._add(backbone, overwrite=False)

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            for entry_point in _plugins.discover():
                if entry_point.name in self._backbones or entry_point.name in self._pending:
                    warnings.warn(
                        f"Skipping backbone plugin ({_plugins.describe(entry_point)}): the name "
                        f"{entry_point.name!r} is already registered, and the registered "
                        "backbone is kept. Use register_backbone(..., overwrite=True) to "
                        "replace a backbone on purpose.",
                        TransferkitWarning,
                        stacklevel=4,
                    )
                    continue
                self._pending[entry_point.name] = entry_point

    def register(self, backbone: Backbone, *, overwrite: bool = False) -> Backbone:
        """Adds ``backbone`` under its name; see :func:`register_backbone`.

        Registering does not discover plugins: a plugin found later under the same name is
        skipped with a warning, so code and built-ins win over plugins.
        """
        return self._add(backbone, overwrite=overwrite)

    def _add(self, backbone: Backbone, *, overwrite: bool) -> Backbone:
        if not isinstance(backbone, Backbone):
            msg = f"Only a transferkit.Backbone can be registered. Received: backbone={backbone!r}"
            raise InvalidArgumentError(msg)
        with self._lock:
            taken = backbone.name in self._backbones or backbone.name in self._pending
            if taken and not overwrite:
                msg = (
                    f"A backbone named {backbone.name!r} is already registered; pass "
                    f"overwrite=True to replace it. Received: name={backbone.name!r}"
                )
                raise BackboneExistsError(msg)
            self._pending.pop(backbone.name, None)
            self._backbones[backbone.name] = backbone
        return backbone

    def unregister(self, name: str) -> None:
        """Removes a backbone; raises :class:`UnknownBackboneError` if there is none."""
        with self._lock:
            self._discover()
            if self._backbones.pop(name, None) is None and self._pending.pop(name, None) is None:
                raise self._unknown(name)

    def get(self, name: str) -> Backbone:
        """Returns the backbone registered under ``name``; see :func:`get_backbone`."""
        if not isinstance(name, str):
            msg = f"A backbone name must be a string. Received: name={name!r}"
            raise InvalidArgumentError(msg)
        with self._lock:
            self._discover()
            if name in self._backbones:
                return self._backbones[name]
            if self._hub and name not in self._pending and _hub.is_hub_name(name):
                return self._hub_spec(name)
            if name not in self._pending:
                raise self._unknown(name)
            # A failing plugin raises PluginLoadError and stays pending, so it fails the same
            # way next time instead of vanishing.
            backbone = _plugins.load(self._pending[name])
            del self._pending[name]
            self._backbones[name] = backbone
            return backbone

    def _hub_spec(self, name: str) -> Backbone:
        if name not in self._hub_specs:
            self._hub_specs[name] = _hub.backbone(name)
        return self._hub_specs[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching an fnmatch ``pattern``; see :func:`list_backbones`."""
        if not isinstance(pattern, str):
            msg = f"pattern must be an fnmatch pattern string. Received: pattern={pattern!r}"
            raise InvalidArgumentError(msg)
        with self._lock:
            self._discover()
            every = set(self._backbones) | set(self._pending)
        # keras-hub is imported (seconds) only for a pattern that can match its names.
        if self._hub and _hub.could_match(pattern) and _hub.available():
            every |= set(_hub.names())
        return sorted(name for name in every if fnmatch.fnmatchcase(name, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def _unknown(self, name: str) -> UnknownBackboneError:
        known = self.names()
        suggestions = _close_matches(name, known)
        hint = (
            f"Did you mean {' or '.join(repr(s) for s in suggestions)}? "
            if suggestions
            else "See transferkit.list_backbones() for the names. "
        )
        return UnknownBackboneError(f"Unknown backbone {name!r}. {hint}Received: backbone={name!r}")


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _close_matches(name: str, known: list[str]) -> list[str]:
    # "MobileNetV2" and "mobilenet-v2" are spellings of "mobilenet_v2": that is the answer.
    same = [k for k in known if _normalize(k) == _normalize(name)]
    if same:
        return same
    by_normalized = {_normalize(k): k for k in known}
    near = difflib.get_close_matches(_normalize(name), list(by_normalized), n=3, cutoff=0.75)
    return [by_normalized[n] for n in near]


_DEFAULT = BackboneRegistry(BUILTIN_BACKBONES, hub=True)


def list_backbones(pattern: str = "*") -> list[str]:
    """Lists the registered backbone names, sorted, that match a pattern.

    Installed plugins are listed without importing them. With the ``hub`` extra installed,
    the image presets of keras-hub are listed too, as ``"keras_hub:<preset>"`` (from
    keras-hub's preset metadata, downloading nothing).

    Args:
        pattern: str. An ``fnmatch`` pattern (``"efficientnet_b*"``). Defaults to ``"*"``.

    Returns:
        A new list of names.

    Example:
        >>> import transferkit as tk
        >>> tk.list_backbones("mobilenet_v3*")
        ['mobilenet_v3_large', 'mobilenet_v3_small']
    """
    return _DEFAULT.names(pattern)


def get_backbone(name: str) -> Backbone:
    """Returns the backbone registered under ``name``.

    Args:
        name: str. A registered name such as ``"mobilenet_v2"``.

    Returns:
        The frozen :class:`~transferkit.Backbone` spec.

    Raises:
        UnknownBackboneError: no such name; the message lists close matches.
        PluginLoadError: the name belongs to a plugin that failed to import.

    Example:
        >>> import transferkit as tk
        >>> tk.get_backbone("mobilenet_v2").weight_sizes
        (96, 128, 160, 192, 224)
    """
    return _DEFAULT.get(name)


@overload
def register_backbone(backbone: Backbone, /, *, overwrite: bool = ...) -> Backbone: ...


@overload
def register_backbone(
    backbone: None = ..., /, *, overwrite: bool = ..., **fields: Any
) -> Callable[[Constructor], Constructor]: ...


def register_backbone(
    backbone: Backbone | None = None, /, *, overwrite: bool = False, **fields: Any
) -> Backbone | Callable[[Constructor], Constructor]:
    """Registers a backbone, as a call or as a decorator of its constructor.

    Args:
        backbone: a :class:`~transferkit.Backbone` to register. Leave it out to use the
            function as a decorator; ``fields`` are then the other ``Backbone`` fields.
        overwrite: bool. Replace a backbone already registered under the name. Defaults to
            False, which raises :class:`~transferkit.errors.BackboneExistsError` instead.
        **fields: with the decorator form, ``Backbone`` fields other than ``constructor``.

    Returns:
        The backbone (call form) or a decorator that registers the constructor and returns
        it unchanged.

    Example:
        >>> import keras
        >>> import transferkit as tk
        >>> @tk.register_backbone(
        ...     name="doc_tiny", preprocessing="tf", default_image_size=32,
        ...     feature_channels=8, family="example", imagenet_weights=False,
        ... )
        ... def doc_tiny(include_top=False, weights=None, input_shape=(32, 32, 3)):
        ...     inputs = keras.Input(input_shape)
        ...     return keras.Model(inputs, keras.layers.Conv2D(8, 3)(inputs))
        >>> "doc_tiny" in tk.list_backbones("doc_*")
        True
    """
    if backbone is not None:
        if fields:
            msg = (
                "Pass either a Backbone or keyword fields for the decorator, not both. "
                f"Received: fields={sorted(fields)}"
            )
            raise InvalidArgumentError(msg)
        return _DEFAULT.register(backbone, overwrite=overwrite)

    def decorator(constructor: Constructor) -> Constructor:
        _DEFAULT.register(Backbone(constructor=constructor, **fields), overwrite=overwrite)
        return constructor

    return decorator
