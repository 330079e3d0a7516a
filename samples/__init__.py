"""Hold the runnable samples; installed as ``appdomain.samples``, run with ``appdomain sample``."""
