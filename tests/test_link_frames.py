"""The link format between processes: golden bytes, and what a hostile frame gets."""

from __future__ import annotations

import marshal
import os
import random
import re
import threading
from multiprocessing import Pipe

import pytest

from appdomain._core import Route
from appdomain._hosts import _frames
from appdomain._hosts._frames import FrameError
from appdomain._hosts._link import Link


@pytest.fixture(params=["C", "Python"])
def checker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Check frames with the C walk of marshal bytes, then with the Python one."""
    if request.param == "Python":
        monkeypatch.setattr(_frames, "_native_problem", None)
        monkeypatch.setattr(_frames, "_native_decode", None)
    elif _frames._native_problem is None:
        pytest.skip("the C switch was not built: frames are checked in Python only")
    return str(request.param)


GOLDEN = [
    (_frames.BYE, ("was unloaded",), "a701062801000000750c00000077617320756e6c6f61646564"),
    (_frames.REPLY, (7, True, 42, None), "a701042804000000690700000054692a0000004e"),
    (
        _frames.CALL,
        (1, "k", (0, 3, "a", 4), "op", (1,), None),
        "a701022806000000690100000075010000006b280400000069000000006903000000750100000061"
        "690400000075020000006f70280100000069010000004e",
    ),
]


@pytest.mark.parametrize(("kind", "body", "golden"), GOLDEN)
def test_frame_bytes_are_the_documented_ones(
    kind: int, body: tuple[object, ...], golden: str
) -> None:
    assert _frames.encode(kind, body).hex() == golden  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "body", "golden"), GOLDEN)
def test_documented_bytes_decode_to_the_frame(
    kind: int, body: tuple[object, ...], golden: str
) -> None:
    assert _frames.decode(bytes.fromhex(golden)) == (kind, body)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xa7\x01", "at least 4 bytes"),
        (b"\x00\x01\x06\xa9", "must start with 0xa7"),
        (b"\xa7\x09\x06\xa9\x00", "of version 9; this appdomain speaks version 1"),
        (b"\xa7\x01\x63\xa9\x00", "kind must be one of [1, 2, 3, 4, 5, 6] (got 99)"),
        (b"\xa7\x01\x06\xff\xff", "BYE frame body is not (readable|valid marshal data)"),
        (b"\xa7\x01\x06(\xff\xff\xff\x7f", "a container of 2147483647 items in 0 bytes"),
        (
            b"\xa7\x01\x06(\x01\x00\x00\x00r\x05\x00\x00\x00",
            "BYE frame body is not (readable|valid marshal data)",
        ),
        (b"\xa7\x01\x06" + b"(" * 3000, "a container of 673720360 items in 2995 bytes"),
        (_frames.encode(_frames.BYE, ("a", "b")), "BYE frame body must be a tuple of 1"),
        (_frames.encode(_frames.REPLY, ("7", True, 1, None)), "REPLY frame field 0 must be int"),
    ],
)
def test_a_broken_frame_is_refused_by_name(checker: str, data: bytes, message: str) -> None:
    pattern = message if "(readable|" in message else re.escape(message)
    with pytest.raises(FrameError, match=pattern):
        _frames.decode(data)


def test_a_large_frame_is_checked_item_by_item(checker: str) -> None:
    forged = b"\xa7\x01\x06(\x02\x00\x00\x00s" + (8000).to_bytes(4, "little") + b"x" * 5000
    with pytest.raises(FrameError, match="a value of 8000 bytes in 5000"):
        _frames.decode(forged)


# A tuple declaring 2**31 - 1 items, in a MARSHAL node's stdlib-marshal bytes.
FORGED = b"(\xff\xff\xff\x7f"


@pytest.mark.parametrize(
    "tag",
    [27, 27.0, complex(27, 0), complex(27, -0.0)],
    ids=["int", "float", "complex", "complex-negative-zero"],
)
def test_a_forged_marshal_node_is_refused_whatever_number_tags_it(
    checker: str, tag: object
) -> None:
    frame = _frames.encode(_frames.REPLY, (7, True, (tag, FORGED), None))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match=r"a MARSHAL node in a frame is not valid marshal data"):
        _frames.decode(frame)


def test_a_marshal_node_tagged_by_a_long_27_is_checked(checker: str) -> None:
    # 27 written as a one-digit long ('l'), which marshal reads as the int 27 too.
    node = b")\x02l\x01\x00\x00\x00\x1b\x00s" + len(FORGED).to_bytes(4, "little") + FORGED
    frame = b"\xa7\x01\x04(\x04\x00\x00\x00i\x07\x00\x00\x00T" + node + b"N"
    with pytest.raises(FrameError, match=r"a MARSHAL node in a frame is not valid marshal data"):
        _frames.decode(frame)


def test_a_valid_marshal_node_in_a_frame_decodes() -> None:
    inner = marshal.dumps([1, {"a": b"b"}])
    frame = _frames.encode(_frames.REPLY, (7, True, (27, inner), None))
    assert _frames.decode(frame) == (_frames.REPLY, (7, True, (27, inner), None))


def test_a_frame_with_reference_flags_is_refused() -> None:
    if _frames._native_problem is None:
        pytest.skip("the C switch was not built: the Python check reads references")
    # REPLY(7, True, 42, None) with the reference flag on the 42: format 2 writes none.
    frame = bytes.fromhex("a701042804000000690700000054e92a0000004e")
    with pytest.raises(FrameError, match="a reference flag"):
        _frames.decode(frame)


def test_random_bytes_only_ever_raise_frame_error(checker: str) -> None:
    chooser = random.Random(1234)
    valid = [bytes.fromhex(golden) for _, _, golden in GOLDEN]
    for _ in range(20000):
        base = bytearray(chooser.choice(valid))
        for _ in range(chooser.randint(1, 4)):
            base[chooser.randrange(len(base))] = chooser.randrange(256)
        data = bytes(base[: chooser.randint(0, len(base))])
        try:
            _frames.decode(data)
        except FrameError:
            pass


@pytest.mark.parametrize("containers", [False, True])
def test_the_c_and_python_checks_give_the_same_verdicts(containers: bool) -> None:
    native = _frames._native_problem
    if native is None:
        pytest.skip("the C switch was not built: frames are checked in Python only")
    chooser = random.Random(99)
    seeds = [bytes.fromhex(golden)[3:] for _, _, golden in GOLDEN] + [
        marshal.dumps(value, 2)
        for value in ([1, {"a": (2.5, b"x")}, {3, 4}], frozenset({"z"}), -(2**70), "é")
    ]
    for _ in range(20000):
        data = bytearray(chooser.choice(seeds))
        for _ in range(chooser.randint(0, 3)):
            data[chooser.randrange(len(data))] = chooser.randrange(256)
        data = data[: chooser.randint(0, len(data))]
        found = native(bytes(data), 0, containers)
        try:
            _frames.check_marshal(bytes(data), "x", containers=containers)
            expected = None
        except FrameError as exc:
            expected = str(exc)
        got = found and f"x is not valid marshal data: {found[0]} (at byte {found[1]})"
        assert got == expected, bytes(data)


def test_the_c_decoder_takes_only_frames_python_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    native = _frames._native_decode
    if native is None:
        pytest.skip("the C switch was not built: frames are decoded in Python only")
    monkeypatch.setattr(_frames, "_native_problem", None)
    monkeypatch.setattr(_frames, "_native_decode", None)
    chooser = random.Random(7)
    valid = [bytes.fromhex(golden) for _, _, golden in GOLDEN]
    valid.append(_frames.encode(_frames.REPLY, (7, True, (27, marshal.dumps({1: [2]})), None)))
    for frame in valid:
        assert native(frame, _frames.MAGIC, _frames.VERSION, _frames._C_SHAPES) == (
            _frames.decode(frame)
        )
    for _ in range(20000):
        data = bytearray(chooser.choice(valid))
        for _ in range(chooser.randint(0, 2)):
            data[chooser.randrange(len(data))] = chooser.randrange(256)
        frame = bytes(data[: chooser.randint(len(data) - 2, len(data))])
        try:
            expected = _frames.decode(frame)
        except FrameError:
            expected = None
        got = native(frame, _frames.MAGIC, _frames.VERSION, _frames._C_SHAPES)
        # What C takes, Python takes alike; C may refuse more (it walks small MARSHAL
        # nodes whole), and then the Python decoder looks at the frame again.
        assert got == expected or got is None, frame


def test_a_link_that_reads_garbage_closes_and_says_why() -> None:
    here, there = Pipe()
    closed = threading.Event()
    link = Link(here, "peer:1:x", "'peer'", check_local=_no_local)
    link.on_close(lambda cause: closed.set())
    link.start()
    there.send_bytes(os.urandom(16))
    assert closed.wait(10)
    assert link.cause is not None and "sent a broken frame" in link.cause
    there.close()


def _no_local(origin: tuple[int, int, str, int]) -> Route:
    raise AssertionError(f"no request was expected (got one for {origin})")


def test_a_link_ending_on_purpose_gives_that_cause_to_whoever_sees_it_end() -> None:
    # An unload ends its host, and a thread that sees the host die first closes the link:
    # the callers are told the domain was unloaded, not that its host died.
    here, there = Pipe()
    causes: list[str] = []
    link = Link(here, "peer:1:x", "'peer'", check_local=_no_local)
    link.on_close(causes.append)
    link.start()
    link.ending = "was unloaded"
    there.close()  # the host ends: the link's reader sees the end of its stream
    assert link.closed.wait(10)
    link.close("was unloaded")
    assert (link.cause, causes) == ("was unloaded", ["was unloaded"])
