"""SSH public keys per user: validated (type, size), stored by the store, rendered into authorized_keys blocks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.desktop.access import is_everywhere
from orchestrator.model.errors import NotFound, UserError

MIN_RSA_BITS = 2048
# key type -> expected size of its key material, checked against the blob itself
_CURVE_BITS = {"ecdsa-sha2-nistp256": 256, "ecdsa-sha2-nistp384": 384, "ecdsa-sha2-nistp521": 521}
ALLOWED_TYPES = ("ssh-ed25519", "ssh-rsa", *_CURVE_BITS, "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com")
BEGIN, END = "# >>> e2e-desktops keys (managed; edits are overwritten) >>>", "# <<< e2e-desktops keys <<<"


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str       # base64 as in the .pub file
    comment: str
    bits: int

    @property
    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint (as `ssh-keygen -lf` prints it)."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self, options: str = "") -> str:
        return " ".join(p for p in (options, self.type, self.blob, self.comment) if p)


def _strings(blob: bytes) -> list[bytes]:
    """The length-prefixed fields of an SSH wire-format key blob."""
    fields, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[i:i + 4])
        if i + 4 + n > len(blob):
            raise ValueError("truncated")
        fields.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return fields


def parse_public_key(text: str) -> PublicKey:
    """One OpenSSH public key line ('TYPE BASE64 [comment]'); UserError saying what is wrong otherwise."""
    if "PRIVATE KEY" in text:
        raise UserError("this is a private key: register the .pub file, and keep the private key to yourself")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) != 1:
        raise UserError(f"expected one public key line, found {len(lines)}")
    parts = lines[0].split(None, 2)
    if len(parts) < 2:
        raise UserError("not an OpenSSH public key: expected 'TYPE BASE64 [comment]' (a .pub file)")
    kind, b64 = parts[0], parts[1]
    comment = parts[2] if len(parts) > 2 else ""
    if kind not in ALLOWED_TYPES:
        why = " (DSA keys are insecure and refused by OpenSSH)" if kind == "ssh-dss" else ""
        raise UserError(f"key type {kind!r} is not accepted{why}; use one of: {', '.join(ALLOWED_TYPES)}")
    try:
        blob = base64.b64decode(b64, validate=True)
        fields = _strings(blob)
    except (binascii.Error, ValueError):
        raise UserError("the key data is not valid base64 SSH key material (truncated or corrupted?)") from None
    if not fields or fields[0].decode(errors="replace") != kind:
        raise UserError(f"the key data does not hold a {kind} key (the type word and the data disagree)")
    bits = _key_bits(kind, fields)
    if kind == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise UserError(f"RSA key of {bits} bits is too short; at least {MIN_RSA_BITS} bits")
    if comment and any(c in comment for c in "\r\n\0"):
        raise UserError("the key comment must be a single line")
    return PublicKey(type=kind, blob=b64, comment=comment, bits=bits)


def _key_bits(kind: str, fields: list[bytes]) -> int:
    try:
        if kind == "ssh-rsa":  # string type, mpint e, mpint n
            modulus = fields[2].lstrip(b"\0")
            return len(modulus) * 8 - (8 - modulus[0].bit_length()) if modulus else 0
        if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
            if len(fields[1]) != 32:
                raise ValueError
            return 256
        curve = kind.removeprefix("sk-").removesuffix("@openssh.com")
        point = fields[2]
        expected = 1 + 2 * ((_CURVE_BITS[curve] + 7) // 8)
        if fields[1].decode() != curve.rsplit("-", 1)[1] or len(point) != expected:
            raise ValueError
        return _CURVE_BITS[curve]
    except (IndexError, ValueError, KeyError):
        raise UserError(f"the {kind} key data has the wrong size or layout (truncated or corrupted?)") from None


class KeyRegistry:
    """A user's registered keys, validated here and kept by the store's ssh_keys family."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def add(self, user: str, text: str) -> PublicKey:
        key = parse_public_key(text)
        record = {"type": key.type, "blob": key.blob, "comment": key.comment, "bits": key.bits,
                  "added_at": time.time()}
        self.store.ssh_keys.put(user, key.fingerprint, record)
        return key

    def list(self, user: str) -> list[dict[str, Any]]:
        rows = [{"fingerprint": fp, **record} for fp, record in self.store.ssh_keys.all(user).items()]
        return sorted(rows, key=lambda r: r["added_at"])

    def keys(self, user: str) -> list[PublicKey]:
        return [PublicKey(r["type"], r["blob"], r["comment"], r["bits"]) for r in self.list(user)]

    def remove(self, user: str, which: str) -> list[str]:
        """Remove keys whose fingerprint, or comment, equals `which` (a fingerprint prefix of 12+ also works)."""
        gone = [r["fingerprint"] for r in self.list(user)
                if which in (r["fingerprint"], r["comment"])
                or (len(which) >= 12 and r["fingerprint"].startswith(which))]
        if not gone:
            raise NotFound(f"no registered key matches {which!r} (see `e2e keys ls`)")
        self.store.ssh_keys.delete(user, *gone)
        return gone


def authorized_keys_block(keys: list[PublicKey], cidrs: list[str] | None) -> str:
    """The managed block for authorized_keys; a from= option carries the CIDR rule into sshd itself."""
    options = "" if not cidrs or is_everywhere(cidrs) else f'from="{",".join(cidrs)}"'
    lines = [BEGIN, *(k.line(options) for k in keys), END]
    return "\n".join(lines) + "\n"


def merge_block(existing: str, block: str) -> str:
    """authorized_keys text with our managed block replaced (or removed, when block is empty); other lines kept."""
    out, inside = [], False
    for line in existing.splitlines():
        if line.strip() == BEGIN:
            inside = True
            continue
        if line.strip() == END:
            inside = False
            continue
        if not inside:
            out.append(line)
    text = "\n".join(out)
    text = text + "\n" if text else ""
    return text + block
