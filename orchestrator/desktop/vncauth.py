"""VNC authentication: random session passwords, the TigerVNC passwd file format, the VncAuth DES response."""

from __future__ import annotations

import secrets

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from orchestrator.model.errors import UserError

MIN_LENGTH = 6      # vncpasswd refuses shorter passwords
SIGNIFICANT = 8     # VncAuth uses the first 8 bytes; the rest is ignored by every VNC server
# d3des's fixed key {23,82,107,6,35,78,88,7} with each byte's bits reversed, as standard DES wants it:
# the key every VNC implementation uses to obfuscate stored passwords.
_OBFUSCATION_KEY = bytes.fromhex("e84ad660c4721ae0")
_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/l/I look-alikes


def _des_encrypt(key8: bytes, data: bytes) -> bytes:
    # Single DES is TripleDES with the key three times (cryptography deprecates 8-byte keys directly).
    enc = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def _des_decrypt(key8: bytes, data: bytes) -> bytes:
    dec = Cipher(TripleDES(key8 * 3), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def _block(password: str) -> bytes:
    return password.encode("latin-1", errors="replace")[:SIGNIFICANT].ljust(SIGNIFICANT, b"\0")


def generate_password() -> str:
    """A random 8-character session password (VncAuth cannot use more)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(SIGNIFICANT))


def check_password(password: str, what: str = "password") -> str:
    """vncpasswd's rules: at least 6 characters, latin-1 only; returns it cut to the 8 that count."""
    if len(password) < MIN_LENGTH:
        raise UserError(f"{what} too short: at least {MIN_LENGTH} characters")
    try:
        password.encode("latin-1")
    except UnicodeEncodeError:
        raise UserError(f"{what} may only use Latin-1 characters (VNC authentication sends bytes)") from None
    return password[:SIGNIFICANT]


def passwd_file(password: str, view_only: str | None = None) -> bytes:
    """The bytes `vncpasswd -f` writes: the obfuscated password, then the view-only one if any."""
    data = _des_encrypt(_OBFUSCATION_KEY, _block(password))
    if view_only:
        data += _des_encrypt(_OBFUSCATION_KEY, _block(view_only))
    return data


def read_passwd_file(data: bytes) -> tuple[str, str | None]:
    """(password, view-only password or None) from a TigerVNC passwd file."""
    if len(data) not in (8, 16):
        raise ValueError(f"a VNC passwd file holds 8 or 16 bytes, not {len(data)}")
    words = [_des_decrypt(_OBFUSCATION_KEY, data[i:i + 8]).rstrip(b"\0").decode("latin-1")
             for i in range(0, len(data), 8)]
    return words[0], (words[1] if len(words) > 1 else None)


def challenge_response(password: str, challenge: bytes) -> bytes:
    """VncAuth: DES-encrypt the server's 16-byte challenge with the password, each key byte bit-reversed."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in _block(password))
    return _des_encrypt(key, challenge)
