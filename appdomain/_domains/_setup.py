"""Say how a new domain is set up: AppDomainSetup."""

from __future__ import annotations

import os

from ._hosting import is_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import ClassVar

    from ._hosting import Host, SubinterpreterHost

__all__ = ["AppDomainSetup"]

_OPTIONAL_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("host", None),
    ("initializer", None),
    ("initializer_arguments", []),
    ("shadow_copy_files", False),
    ("shadow_copy_directories", []),
    ("cache_path", None),
)


class AppDomainSetup:
    """How a new domain is set up: where it loads code from (its sys.path), whether it
    loads copies of that code (shadow copy), and what runs first in it (its initializer)."""

    # A plain class, not a dataclass: importing dataclasses would slow every domain's start.
    __slots__ = (
        "application_base",
        "application_name",
        "cache_path",
        "host",
        "initializer",
        "initializer_arguments",
        "private_bin_path",
        "shadow_copy_directories",
        "shadow_copy_files",
    )
    application_base: str | os.PathLike[str] | None
    private_bin_path: list[str | os.PathLike[str]]
    application_name: str | None
    host: Host | SubinterpreterHost | None
    initializer: Callable[..., object] | None
    initializer_arguments: list[object]
    shadow_copy_files: bool
    shadow_copy_directories: list[str | os.PathLike[str]]
    cache_path: str | os.PathLike[str] | None

    def __init__(
        self,
        application_base: str | os.PathLike[str] | None = None,
        private_bin_path: Sequence[str | os.PathLike[str]] | str = (),
        application_name: str | None = None,
        *,
        host: Host | SubinterpreterHost | None = None,
        initializer: Callable[..., object] | None = None,
        initializer_arguments: Sequence[object] = (),
        shadow_copy_files: bool = False,
        shadow_copy_directories: Sequence[str | os.PathLike[str]] | str = (),
        cache_path: str | os.PathLike[str] | None = None,
    ) -> None:
        base = application_base
        if base is not None and not isinstance(base, (str, os.PathLike)):
            raise TypeError(
                f"'application_base' must be str or os.PathLike "
                f"(got {base!r} that is a {type(base).__name__})"
            )
        paths = _paths("private_bin_path", private_bin_path)
        if not is_host(host):
            raise TypeError(
                f"'host' must be SubinterpreterHost, ProcessHost, RayHost or None "
                f"(got {host!r} that is a {type(host).__name__})"
            )
        self.host = host
        self.application_base = application_base
        self.private_bin_path = paths
        self.application_name = application_name
        if initializer is not None and not callable(initializer):
            raise TypeError(
                f"'initializer' must be an importable function or None "
                f"(got {initializer!r} that is a {type(initializer).__name__})"
            )
        if isinstance(initializer_arguments, (str, bytes)) or not isinstance(
            initializer_arguments, (list, tuple)
        ):
            raise TypeError(
                f"'initializer_arguments' must be a list or tuple of arguments "
                f"(got {initializer_arguments!r} that is a {type(initializer_arguments).__name__})"
            )
        if not isinstance(shadow_copy_files, bool):
            raise TypeError(
                f"'shadow_copy_files' must be bool (got {shadow_copy_files!r} that is a "
                f"{type(shadow_copy_files).__name__})"
            )
        if cache_path is not None and not isinstance(cache_path, (str, os.PathLike)):
            raise TypeError(
                f"'cache_path' must be str or os.PathLike or None "
                f"(got {cache_path!r} that is a {type(cache_path).__name__})"
            )
        self.initializer = initializer
        self.initializer_arguments = list(initializer_arguments)
        self.shadow_copy_files = shadow_copy_files
        self.shadow_copy_directories = _paths("shadow_copy_directories", shadow_copy_directories)
        self.cache_path = cache_path
        if shadow_copy_files and not self.shadow_folders():
            raise ValueError(
                "shadow_copy_files=True needs folders to copy: give shadow_copy_directories, "
                "or an application_base or private_bin_path"
            )

    def __repr__(self) -> str:
        shown = [
            f"application_base={self.application_base!r}",
            f"private_bin_path={self.private_bin_path!r}",
            f"application_name={self.application_name!r}",
        ]
        # The later fields only when set, so that the common setup reads short.
        for name, default in _OPTIONAL_DEFAULTS:
            value = getattr(self, name)
            if value != default:
                shown.append(f"{name}={value!r}")
        return f"AppDomainSetup({', '.join(shown)})"

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in sorted(self.__slots__))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AppDomainSetup):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def sys_path(self, inherited: Sequence[str]) -> list[str]:
        """Return the domain's sys.path: its base and private bin folders, then inherited."""
        front: list[str] = []
        if self.application_base is not None:
            base = os.path.abspath(os.fspath(self.application_base))
            front.append(base)
            front += [os.path.join(base, os.fspath(p)) for p in self.private_bin_path]
        else:
            front += [os.path.abspath(os.fspath(p)) for p in self.private_bin_path]
        return front + [p for p in inherited if p not in front]

    def shadow_folders(self) -> list[str]:
        """Return the folders whose copies the domain imports (absolute; empty: no shadow copy).

        shadow_copy_directories when given, else the base and private bin folders, as .NET's
        ShadowCopyDirectories defaults to every folder the domain probes.
        """
        if not self.shadow_copy_files:
            return []
        if self.shadow_copy_directories:
            return [os.path.abspath(os.fspath(p)) for p in self.shadow_copy_directories]
        return self.sys_path(())

    @property
    def ShadowCopyFiles(self) -> str:
        return "true" if self.shadow_copy_files else "false"

    @property
    def ShadowCopyDirectories(self) -> str:
        return ";".join(os.fspath(p) for p in self.shadow_copy_directories)

    @property
    def CachePath(self) -> str | os.PathLike[str] | None:
        return self.cache_path

    @property
    def AppDomainInitializer(self) -> Callable[..., object] | None:
        return self.initializer

    @property
    def AppDomainInitializerArguments(self) -> list[object]:
        return self.initializer_arguments

    @property
    def ApplicationBase(self) -> str | os.PathLike[str] | None:
        return self.application_base

    @property
    def PrivateBinPath(self) -> str:
        return ";".join(os.fspath(p) for p in self.private_bin_path)


def _paths(label: str, value: object) -> list[str | os.PathLike[str]]:
    """Return value as a list of paths: a list or tuple of them, or a ';'-separated str."""
    if isinstance(value, str):
        # .NET separates PrivateBinPath and ShadowCopyDirectories entries with ';'
        return [p for p in value.split(";") if p]
    if isinstance(value, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in value):
        return list(value)
    raise TypeError(f"'{label}' must be a list of paths or a ';'-separated str (got {value!r})")
