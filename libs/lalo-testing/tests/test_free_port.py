from __future__ import annotations

import socket

import pytest
from lalo_testing import stack


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # The OS may give the same ephemeral port to consecutive probes; simulate it doing so.
    offered = iter([40001, 40001, 40001, 40002])

    class Probe:
        def __init__(self, *_args: object) -> None:
            self.port = next(offered)

        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def bind(self, _address: object) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(stack, "_handed_out", set())
    monkeypatch.setattr(stack.socket, "socket", Probe)
    assert [stack.free_port(), stack.free_port()] == [40001, 40002]


def test_free_ports_are_bindable() -> None:
    port = stack.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
