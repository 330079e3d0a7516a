"""Call a method across domains with Mono's four marshalling tiers (seed 003's xdomain example).

The seed's pseudo-C# wrapper example is for

    ArrayList Test (int a, string b, ArrayList c, ref ArrayList d, ref string e, ref int f)

Here ``a`` is tier 1 (passed as is), ``b`` tier 2 (copied by the runtime), ``c`` tier 4
(serialized), and the ``ref`` parameters ``d``, ``e``, ``f`` are ``Ref`` boxes whose final
values the callee's domain copies back into the caller's boxes (tier 3).
"""

from __future__ import annotations

from appdomain import AppDomain, MarshalByRefObject, Ref


class XDomainTarget(MarshalByRefObject):
    """The object that lives in the other domain (the seed's target.Test)."""

    def Test(
        self, a: int, b: str, c: list[object], d: Ref[list[object]], e: Ref[str], f: Ref[int]
    ) -> list[object]:
        here = AppDomain.current_domain
        d.value = [*d.value, f"seen in {here.friendly_name}"]
        e.value = e.value.upper()
        f.value = f.value + a
        return [a, b, len(c), here.id]


def main() -> int:
    domain = AppDomain.CreateDomain("XDomainTest")
    try:
        target = domain.CreateInstanceAndUnwrap("__main__", "XDomainTarget")
        d, e, f = Ref(["from caller"]), Ref("ref string"), Ref(40)
        result = target.Test(2, "copied string", [1, 2.5, {"k": "v"}], d, e, f)
        print(f"returned value: {result}")
        print(f"ref d (ArrayList): {d.value}")
        print(f"ref e (string):    {e.value!r}")
        print(f"ref f (int):       {f.value}")
        print(
            f"the call ran in domain {result[3]} ({domain.friendly_name}); "
            f"this is domain {AppDomain.CurrentDomain.Id}"
        )
        return 0 if (f.value == 42 and e.value == "REF STRING") else 1
    finally:
        AppDomain.Unload(domain)


if __name__ == "__main__":
    raise SystemExit(main())
