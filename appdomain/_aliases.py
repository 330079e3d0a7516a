"""Keep the module names this interpreter knows by another name than the wire does.

A domain imports the default domain's main script as ``MAIN_ALIAS`` (as multiprocessing
imports it as ``__mp_main__``), so its ``if __name__ == "__main__"`` block stays off; on the
wire that module is ``__main__``.  The domain boot names the alias here before it has
loaded ``appdomain.marshal``, which reads these tables: both layers above share this one.
"""

from __future__ import annotations

__all__ = ["MAIN_ALIAS", "local_to_wire", "wire_to_local"]

MAIN_ALIAS = "__appdomain_main__"

# local module name -> wire name, and back (per interpreter, like all module state)
local_to_wire: dict[str, str] = {}
wire_to_local: dict[str, str] = {}
