"""A boot put off: an interpreter made for one isolated test becomes a domain on first use.

The pytest plugin creates a test's interpreter with only what running the test needs
(``appdomain._testing._light``) and leaves its boot configuration here; ``_runtime``, when
something in that interpreter imports it, boots the domain from it (``boot_subdomain``).
Imports nothing: setting it costs the interpreter no more than its own import.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._runtime import BootConfig

# Set in the test's interpreter by its creator; taken (and cleared) by the boot.
cfg: "BootConfig | None" = None
