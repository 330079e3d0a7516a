"""Domains: AppDomain and AppDomainSetup, the boot of a new domain, its events and its unload.

Modules: ``_domain`` (the public AppDomain handle), ``_calls`` (what a handle runs in its
domain), ``_create`` (starting a domain), ``_registry`` (the default domain's record of the
loaded ones), ``_runtime`` (each interpreter's own part: boot, the ``domain.*`` operations,
the main-script alias), ``_unload`` (tearing a domain down, run by the default domain),
``_events``.  Kept empty: every domain boots through ``_runtime``, and AppDomain itself loads
only on first use.
"""
