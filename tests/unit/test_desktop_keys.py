"""SSH public keys: real keys from ssh-keygen accepted with OpenSSH's fingerprint; bad ones refused, saying why."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess

import pytest

from orchestrator.desktop.keys import BEGIN, END, KeyRegistry, authorized_keys_block, merge_block, parse_public_key
from orchestrator.model.errors import NotFound, UserError
from tests.conftest import require


@pytest.fixture(scope="module")
def keygen(tmp_path_factory):
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (apt-get install openssh-client)")
    folder = tmp_path_factory.mktemp("keys")

    def make(kind: str, bits: int | None = None) -> tuple[str, str]:
        """(public key line, fingerprint as ssh-keygen -lf prints it)."""
        path = folder / f"{kind}-{bits}"
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", str(bits)] if bits else []), "-N", "",
                            "-C", f"me@{kind}", "-f", str(path)], check=True)
        fp = subprocess.run(["ssh-keygen", "-lf", str(path) + ".pub"], capture_output=True, text=True,
                            check=True).stdout.split()[1]
        return (folder / f"{kind}-{bits}.pub").read_text(), fp

    return make


@pytest.mark.parametrize("kind,bits,expected_bits", [("ed25519", None, 256), ("ecdsa", 256, 256),
                                                     ("ecdsa", 384, 384), ("ecdsa", 521, 521),
                                                     ("rsa", 3072, 3072)])
def test_real_keys_are_accepted_with_openssh_fingerprints(keygen, kind, bits, expected_bits):
    line, fingerprint = keygen(kind, bits)
    key = parse_public_key(line)
    assert key.fingerprint == fingerprint
    assert key.bits == expected_bits and key.comment == f"me@{kind}"


def test_short_rsa_keys_are_refused(keygen):
    line, _ = keygen("rsa", 1024)
    with pytest.raises(UserError, match="1024 bits is too short; at least 2048"):
        parse_public_key(line)


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


@pytest.mark.parametrize("text,message", [
    (f"ssh-dss {_blob(b'ssh-dss', b'p', b'q', b'g', b'y')}", "DSA keys are insecure"),
    (f"ssh-foo {_blob(b'ssh-foo', b'x')}", "'ssh-foo' is not accepted"),
    ("ssh-ed25519 !!!notbase64", "not valid base64"),
    (f"ssh-ed25519 {_blob(b'ssh-ed25519', b'short')}", "wrong size"),
    (f"ssh-rsa {_blob(b'ssh-ed25519', bytes(32))}", "the type word and the data disagree"),
    ("ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20abc").decode(), "not valid base64"),
    ("ssh-ed25519", "expected 'TYPE BASE64"),
    ("", "expected one public key line, found 0"),
    (f"ssh-ed25519 {_blob(b'ssh-ed25519', bytes(32))}\nssh-ed25519 {_blob(b'ssh-ed25519', bytes(32))}",
     "found 2"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
     "this is a private key"),
])
def test_invalid_keys_are_refused_saying_why(text, message):
    with pytest.raises(UserError, match=message):
        parse_public_key(text)


def test_a_private_key_line_is_refused_as_such():
    with pytest.raises(UserError, match="private key"):
        parse_public_key("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA")


def test_registry_adds_lists_and_removes_per_user(store, keygen):
    line, fingerprint = keygen("ed25519")
    registry = KeyRegistry(store)
    registry.add("ann", line)
    registry.add("ann", line)  # the same key twice is one key
    assert [r["fingerprint"] for r in registry.list("ann")] == [fingerprint]
    assert registry.list("bob") == []
    with pytest.raises(NotFound):
        registry.remove("bob", fingerprint)
    assert registry.remove("ann", "me@ed25519") == [fingerprint]
    assert registry.list("ann") == []


def test_authorized_keys_block_carries_the_cidrs_and_keeps_other_lines(keygen):
    key = parse_public_key(keygen("ed25519")[0])
    existing = "ssh-ed25519 AAAAengine engine@host\n"
    block = authorized_keys_block([key], ["10.0.0.0/8", "2001:db8::/32"])
    text = merge_block(existing, block)
    assert text.startswith(existing)
    assert f'from="10.0.0.0/8,2001:db8::/32" ssh-ed25519 {key.blob} me@ed25519' in text
    assert merge_block(text, block) == text                       # idempotent
    assert merge_block(text, "") == existing                      # removal leaves the engine's own line
    assert BEGIN not in merge_block(text, "") and END not in merge_block(text, "")
    assert "from=" not in authorized_keys_block([key], ["0.0.0.0/0", "::/0"])  # everywhere: no option
