"""What a new domain needs beyond its sys.path: shadow copies and an initializer run first.

The creating domain turns its AppDomainSetup into a ``Startup`` (plain values, so that a
domain that is not the default one can send it with its ``domain.create`` request); the
default domain, which creates every domain, makes the copies before the domain exists and
runs the initializer before it hands the domain out.
"""

from __future__ import annotations

import os

from .. import _core
from .._errors import AppDomainError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .._core import Route
    from .._core._wire import Shareable
    from ._setup import AppDomainSetup

    # (module, qualified name, encoded arguments) of an initializer.
    type WireInitializer = tuple[str, str, Shareable]
    # (folders to shadow, cache path or "", initializer or None).
    type WireStartup = tuple[tuple[str, ...], str, WireInitializer | None]

__all__ = ["Startup"]


class Startup:
    """The shadowed folders, the cache path, and the initializer of one new domain."""

    __slots__ = ("cache_path", "folders", "initializer")

    def __init__(
        self, folders: tuple[str, ...], cache_path: str | None, initializer: WireInitializer | None
    ) -> None:
        self.folders = folders
        self.cache_path = cache_path
        self.initializer = initializer

    @classmethod
    def of(
        cls, setup: AppDomainSetup, importable_name: Callable[[Any], tuple[str, str]]
    ) -> Startup:
        """Read a setup; raise TypeError for an initializer other domains cannot import.

        importable_name(func) names a function as other domains import it (_domain's).
        """
        initializer: WireInitializer | None = None
        if setup.initializer is not None:
            from .. import marshal

            try:
                module, qualname = importable_name(setup.initializer)
            except TypeError:
                raise TypeError(
                    f"'initializer' must be a function importable by module and name "
                    f"(got {setup.initializer!r}); lambdas, closures and bound methods "
                    "cannot run in another domain"
                ) from None
            wire_args = marshal.encode_call(tuple(setup.initializer_arguments), {})
            initializer = (module, qualname, wire_args)
        cache = None if setup.cache_path is None else os.path.abspath(os.fspath(setup.cache_path))
        return cls(tuple(setup.shadow_folders()), cache, initializer)

    def to_wire(self) -> WireStartup:
        return (self.folders, self.cache_path or "", self.initializer)

    @classmethod
    def from_wire(cls, wire: WireStartup) -> Startup:
        folders, cache_path, initializer = wire
        return cls(tuple(folders), cache_path or None, initializer)

    def run_initializer(self, name: str, route: Route) -> None:
        """Run the initializer in the new domain; raise AppDomainError if it raises."""
        if self.initializer is None:
            return
        module, qualname, _ = self.initializer
        try:
            _core.call(route, "domain.callback", self.initializer)
        except Exception as exc:
            remote = getattr(exc, "remote_traceback", "") or ""
            raise AppDomainError(
                f"domain {name!r} was not created: its initializer {module}.{qualname} raised "
                f"{type(exc).__name__}: {exc}" + (f"\n{remote.rstrip()}" if remote else "")
            ) from exc
