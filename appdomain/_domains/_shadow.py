"""Shadow copy: a domain imports copies of its code folders, so the originals may change.

Run by the default domain, which creates every domain: before the domain exists, each
folder to shadow is copied (``__pycache__`` left out: the copy compiles afresh) into a
folder of its own under the setup's cache path (the system's temporary folder when none),
and the domain's ``sys.path`` names the copies instead of the originals.  The copies are
removed when the domain unloads, or at once when it fails to start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ShadowCopy", "prepare", "release", "track"]


class ShadowCopy:
    """The copies made for one domain: the folder that holds them, original -> copy."""

    __slots__ = ("copies", "root")

    def __init__(self, root: str, copies: dict[str, str]) -> None:
        self.root = root
        self.copies = copies

    def sys_path(self, sys_path: Sequence[str]) -> list[str]:
        """Return sys_path with each shadowed folder replaced by its copy (added in front
        when the folder was not on it)."""
        replaced = [self.copies.get(os.path.abspath(p) if p else p, p) for p in sys_path]
        missing = [copy for copy in self.copies.values() if copy not in replaced]
        return missing + replaced

    def remove(self) -> None:
        """Delete the copies (a file a thread still holds open goes with its folder)."""
        shutil.rmtree(self.root, ignore_errors=True)


def prepare(
    name: str, folders: Sequence[str], cache_path: str | os.PathLike[str] | None
) -> ShadowCopy | None:
    """Copy folders for the domain name; None when there is nothing to shadow.

    Raises FileNotFoundError, having copied nothing, when a folder does not exist.
    """
    if not folders:
        return None
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"shadow copy for domain {name!r}: the folder {folder!r} does not exist"
            )
    base = os.path.abspath(os.fspath(cache_path)) if cache_path is not None else None
    if base is not None:
        os.makedirs(base, exist_ok=True)
    safe = re.sub(r"[^\w.-]", "_", name)[:40]
    root = tempfile.mkdtemp(prefix=f"appdomain-shadow-{safe}-", dir=base)
    shadow = ShadowCopy(root, {})
    try:
        for index, folder in enumerate(dict.fromkeys(folders)):
            copy = os.path.join(root, f"{index}-{os.path.basename(folder.rstrip(os.sep))}")
            shutil.copytree(
                folder, copy, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True
            )
            shadow.copies[folder] = copy
    except BaseException:
        shadow.remove()
        raise
    return shadow


# Domain id -> its copies, until it unloads (the default domain's bookkeeping).
_live: dict[int, ShadowCopy] = {}


def track(domain_id: int, shadow: ShadowCopy) -> None:
    """Remember the copies of a domain that started, to remove them when it unloads."""
    _live[domain_id] = shadow


def release(domain_id: int) -> None:
    """Remove the copies of a domain that has unloaded (if it had any)."""
    shadow = _live.pop(domain_id, None)
    if shadow is not None:
        shadow.remove()
