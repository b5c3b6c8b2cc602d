"""CIDR access rules: parsing, matching (IPv4, IPv6, mapped), submit-time resolution, nftables rules."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from orchestrator.desktop.access import (
    allowed,
    normalise_rules,
    resolve,
    resolve_for_submit,
    set_user_rules,
    user_rules,
)
from orchestrator.desktop.service import nftables_removal, nftables_rules
from orchestrator.model.errors import UserError
from orchestrator.model.spec import validate_spec
from tests.conftest import require


def test_rules_are_normalised_and_aliases_understood():
    assert normalise_rules("Everywhere") == ["everywhere"]
    assert normalise_rules(["My current IP", "my-ip"]) == ["my-ip"]
    assert normalise_rules(["10.1.2.3/8", "192.0.2.7", "2001:DB8::1/32"]) == ["10.0.0.0/8", "192.0.2.7/32",
                                                                            "2001:db8::/32"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "300.1.1.1", "example.com", "", "2001:db8::/129", 42])
def test_bad_rules_are_refused_naming_the_value(bad):
    with pytest.raises(ValueError) as info:
        normalise_rules([bad])
    assert repr(bad) in str(info.value) or "not an access rule" in str(info.value)


def test_an_empty_rule_list_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        normalise_rules([])


@pytest.mark.parametrize("address,cidrs,expected", [
    ("203.0.113.9", ["203.0.113.0/24"], True),
    ("203.0.114.9", ["203.0.113.0/24"], False),        # one network further: outside
    ("::ffff:203.0.113.9", ["203.0.113.0/24"], True),  # what a dual-stack socket reports for IPv4
    ("2001:db8::5", ["2001:db8::/32"], True),
    ("2001:db9::5", ["2001:db8::/32"], False),
    ("127.0.0.1", ["127.0.0.2/32"], False),
    ("127.0.0.2", ["127.0.0.2/32"], True),
    ("10.0.0.1", ["0.0.0.0/0", "::/0"], True),
    ("::1", ["0.0.0.0/0"], False),                      # an IPv4-only rule admits no IPv6 client
    ("not-an-address", ["0.0.0.0/0", "::/0"], False),
])
def test_allowed(address, cidrs, expected):
    assert allowed(address, cidrs) is expected


def test_everywhere_and_my_ip_resolve_to_networks():
    assert resolve(["everywhere"]) == ["0.0.0.0/0", "::/0"]
    assert resolve(["my-ip", "10.0.0.0/8"], "198.51.100.4") == ["198.51.100.4/32", "10.0.0.0/8"]
    assert resolve(["my-ip"], "2001:db8::7") == ["2001:db8::7/128"]
    with pytest.raises(UserError, match="my-ip"):
        resolve(["my-ip"], None)


def _spec(**desktop):
    return validate_spec({"name": "j", "solver": {"name": "command", "command": ["true"]}, "desktop": desktop})


def test_submit_uses_the_spec_then_the_users_default_then_everywhere(store):
    assert resolve_for_submit(_spec(), store, "ann").desktop.access == ["0.0.0.0/0", "::/0"]
    set_user_rules(store, "ann", ["192.0.2.0/24"])
    assert user_rules(store, "ann") == ["192.0.2.0/24"]
    assert resolve_for_submit(_spec(), store, "ann").desktop.access == ["192.0.2.0/24"]
    assert resolve_for_submit(_spec(), store, "bob").desktop.access == ["0.0.0.0/0", "::/0"]  # per user
    assert resolve_for_submit(_spec(access=["10.0.0.0/8"]), store, "ann").desktop.access == ["10.0.0.0/8"]
    set_user_rules(store, "ann", None)
    assert user_rules(store, "ann") is None


def test_my_ip_that_cannot_be_resolved_is_a_clear_error(store, monkeypatch):
    monkeypatch.setattr(store._r, "client_info", lambda: {})
    with pytest.raises(UserError, match="my-ip"):
        resolve_for_submit(_spec(access=["my-ip"]), store, "ann")


def test_my_ip_is_the_address_the_engine_sees(store, monkeypatch):
    monkeypatch.setattr(store._r, "client_info", lambda: {"addr": "198.51.100.4:51234"})
    assert resolve_for_submit(_spec(access=["my-ip"]), store, "ann").desktop.access == ["198.51.100.4/32"]
    monkeypatch.setattr(store._r, "client_info", lambda: {"addr": "[2001:db8::7]:51234"})
    assert resolve_for_submit(_spec(access=["my-ip"]), store, "ann").desktop.access == ["2001:db8::7/128"]


@pytest.mark.parametrize("cidrs", [["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"], ["192.0.2.0/24"],
                                   ["2001:db8::/32"], ["0.0.0.0/0", "::/0"]])
def test_nftables_rules_are_accepted_by_nft(cidrs, tmp_path):
    text = nftables_rules("ab12cd34", 41000, cidrs)
    assert "tcp dport 41000" in text
    if cidrs != ["0.0.0.0/0", "::/0"]:
        assert "drop" in text and all(c in text for c in cidrs)
    nft = shutil.which("nft")
    require(nft is not None, "nft (apt-get install nftables)")
    require(os.geteuid() == 0, "root, for nft --check")
    path = tmp_path / "rules.nft"
    path.write_text(text)
    check = subprocess.run([nft, "--check", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_nftables_removal_loads_whether_or_not_the_rules_are_there(tmp_path):
    text = nftables_removal("ab12cd34")
    assert "delete table inet e2e_desktop_ab12cd34" in text and "dport" not in text
    nft = shutil.which("nft")
    require(nft is not None, "nft (apt-get install nftables)")
    require(os.geteuid() == 0, "root, for nft --check")
    path = tmp_path / "removal.nft"
    path.write_text(text)
    check = subprocess.run([nft, "--check", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
