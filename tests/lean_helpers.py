"""A remote class whose module imports nothing but appdomain (what a domain loads for it)."""

from appdomain import MarshalByRefObject


class Adder(MarshalByRefObject):
    def add(self, a: int, b: int) -> int:
        return a + b
