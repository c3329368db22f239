"""Address policy of http_fetch: what counts as public, and numeric spellings."""

from __future__ import annotations

import ipaddress

import pytest
from lalo_tools.netguard import (
    AddressRefused,
    check_addresses,
    ip_literal,
    is_legacy_ipv4,
    refusal_reason,
)

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.10",
    "198.18.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe",
    "2001:db8::1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_metadata_address_is_named() -> None:
    reason = refusal_reason(ipaddress.ip_address("169.254.169.254"))
    assert reason is not None
    assert "metadata" in reason


def test_loopback_exception_is_loopback_only() -> None:
    assert refusal_reason(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert refusal_reason(ipaddress.ip_address("::1"), allow_loopback=True) is None
    for other in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "::ffff:127.0.0.1", "fe80::1"):
        assert refusal_reason(ipaddress.ip_address(other), allow_loopback=True) is not None


def test_scoped_ipv6_is_refused() -> None:
    assert refusal_reason(ipaddress.ip_address("fe80::1%1")) is not None


def test_a_name_with_any_private_address_is_refused() -> None:
    mixed = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.1.2.3")]
    with pytest.raises(AddressRefused, match=r"evil\.example resolves to 10\.1\.2\.3"):
        check_addresses(mixed, host="evil.example", allow_loopback=False)
    with pytest.raises(AddressRefused, match="did not resolve"):
        check_addresses([], host="nothing.example", allow_loopback=False)


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "0x7f000001", "017700000001", "0177.0.0.1", "127.1", "10.1"]
)
def test_legacy_numeric_ipv4_spellings_are_detected(host: str) -> None:
    assert is_legacy_ipv4(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "example.com", "[::1]", "8.8.8.8", "a.b.c"])
def test_normal_hosts_are_not_legacy(host: str) -> None:
    assert not is_legacy_ipv4(host)


def test_ip_literal_accepts_brackets() -> None:
    assert ip_literal("[::1]") == ipaddress.ip_address("::1")
    assert ip_literal("10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert ip_literal("example.com") is None
