"""Say how a new domain is set up: AppDomainSetup."""

from __future__ import annotations

import os

from ._hosting import is_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import ClassVar

    from ._hosting import Host, SubinterpreterHost

__all__ = ["AppDomainSetup"]


class AppDomainSetup:
    """How a new domain is set up: where it loads code from (its sys.path), where it runs."""

    # A plain class, not a dataclass: importing dataclasses would slow every domain's start.
    __slots__ = ("application_base", "application_name", "host", "private_bin_path")
    application_base: str | os.PathLike[str] | None
    private_bin_path: list[str | os.PathLike[str]]
    application_name: str | None
    host: Host | SubinterpreterHost | None

    def __init__(
        self,
        application_base: str | os.PathLike[str] | None = None,
        private_bin_path: Sequence[str | os.PathLike[str]] | str = (),
        application_name: str | None = None,
        host: Host | SubinterpreterHost | None = None,
    ) -> None:
        base = application_base
        if base is not None and not isinstance(base, (str, os.PathLike)):
            raise TypeError(
                f"'application_base' must be str or os.PathLike "
                f"(got {base!r} that is a {type(base).__name__})"
            )
        if isinstance(private_bin_path, str):
            # .NET separates PrivateBinPath entries with ';'
            paths: list[str | os.PathLike[str]] = [p for p in private_bin_path.split(";") if p]
        elif isinstance(private_bin_path, (list, tuple)) and all(
            isinstance(p, (str, os.PathLike)) for p in private_bin_path
        ):
            paths = list(private_bin_path)
        else:
            raise TypeError(
                f"'private_bin_path' must be a list of paths or a ';'-separated str "
                f"(got {private_bin_path!r})"
            )
        if not is_host(host):
            raise TypeError(
                f"'host' must be SubinterpreterHost, ProcessHost, RayHost or None "
                f"(got {host!r} that is a {type(host).__name__})"
            )
        self.host = host
        self.application_base = application_base
        self.private_bin_path = paths
        self.application_name = application_name

    def __repr__(self) -> str:
        return (
            f"AppDomainSetup(application_base={self.application_base!r}, "
            f"private_bin_path={self.private_bin_path!r}, "
            f"application_name={self.application_name!r}, host={self.host!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AppDomainSetup):
            return NotImplemented
        return (
            self.application_base,
            self.private_bin_path,
            self.application_name,
            self.host,
        ) == (other.application_base, other.private_bin_path, other.application_name, other.host)

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

    @property
    def ApplicationBase(self) -> str | os.PathLike[str] | None:
        return self.application_base

    @property
    def PrivateBinPath(self) -> str:
        return ";".join(os.fspath(p) for p in self.private_bin_path)
