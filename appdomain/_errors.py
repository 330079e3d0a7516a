"""Define the exceptions appdomain raises, all rooted at AppDomainError."""

from __future__ import annotations

__all__ = [
    "AppDomainError",
    "AppDomainUnloadedException",
    "CannotUnloadAppDomainException",
    "RemotingException",
    "RemoteException",
    "SerializationException",
    "ThreadAbortException",
    "ChannelClosedError",
    "SocketHandoffError",
]


class AppDomainError(Exception):
    """Base class of every error appdomain raises on its own account."""


class AppDomainUnloadedException(AppDomainError, RuntimeError):
    """The domain a call or proxy targets has been unloaded (or is being unloaded)."""


class CannotUnloadAppDomainException(AppDomainError, RuntimeError):
    """Unload did not finish in time; the domain is still loaded and usable."""


class RemotingException(AppDomainError, RuntimeError):
    """A remote object could not be reached (disconnected, lease expired, bad reference)."""


class SerializationException(AppDomainError, TypeError):
    """A value cannot cross a domain boundary, or bytes on the wire cannot be decoded."""


class ThreadAbortException(BaseException):
    """Raised asynchronously in a domain's threads when the domain is unloaded.

    Like .NET's ThreadAbortException it is not an ordinary error: it derives from
    BaseException so that ``except Exception`` in user code does not swallow the abort.
    """


class RemoteException(AppDomainError, RuntimeError):
    """An exception from another domain whose type cannot be imported here.

    ``remote_type`` names the original type (``module.QualName``); ``remote_traceback``
    holds the callee's formatted traceback.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback


class ChannelClosedError(AppDomainError, EOFError):
    """The channel was closed: nothing more can be sent, and nothing is left to receive."""


class SocketHandoffError(AppDomainError, OSError):
    """A SocketInformation could not be claimed (forged, expired, claimed twice, wrong process)."""
