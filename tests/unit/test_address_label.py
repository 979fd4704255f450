"""An anonymous client's rate-limit bucket is named by its address, bounded and canonical."""

from __future__ import annotations

from logpipe_cli.ingest import address_label, bucket_of


def test_an_ip_address_is_spelled_one_way() -> None:
    assert address_label("10.0.0.2") == "10.0.0.2"
    assert address_label("0:0::1") == address_label("::1") == "::1"


def test_anything_else_becomes_a_short_digest() -> None:
    # a forwarded-for value a client wrote itself may be anything, of any length
    long = "x" * 20_000
    label = address_label(long)
    assert label.startswith("h:")
    assert len(label) == 2 + 24
    assert address_label(long) == label
    assert address_label(long + "y") != label
    assert address_label("\udcff\x1b[2J") != label


def test_no_address_shares_one_bucket() -> None:
    assert bucket_of(None, None) == bucket_of(None, "") == "addr:unknown"
    assert bucket_of("tok", "10.0.0.2") == "token:tok"
