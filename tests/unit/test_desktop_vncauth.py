"""VNC passwords: TigerVNC's passwd file format (checked against vncpasswd itself), vncpasswd's rules, RFB replies."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading

import pytest

from orchestrator.desktop.rfb import AuthFailed, RFBError, handshake
from orchestrator.desktop.vncauth import (
    challenge_response,
    check_password,
    generate_password,
    passwd_file,
    read_passwd_file,
)
from orchestrator.model.errors import UserError
from tests.conftest import require


def vncpasswd_f(*lines: str) -> bytes:
    require(shutil.which("vncpasswd") is not None, "vncpasswd (apt-get install tigervnc-tools)")
    return subprocess.run(["vncpasswd", "-f"], input="".join(f"{ln}\n" for ln in lines).encode(),
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("password", ["secret12", "abcdef", "longer-than-eight", "P@ss w0rd"])
def test_passwd_file_is_byte_for_byte_what_vncpasswd_writes(password):
    assert passwd_file(password) == vncpasswd_f(password)


def test_view_only_password_follows_the_full_one_as_vncpasswd_writes_it():
    assert passwd_file("secret12", "viewonly") == vncpasswd_f("secret12", "viewonly")
    assert read_passwd_file(passwd_file("secret12", "viewonly")) == ("secret12", "viewonly")
    assert read_passwd_file(passwd_file("abcdefghij")) == ("abcdefgh", None)  # 8 characters count


def test_a_passwd_file_of_another_size_is_refused():
    with pytest.raises(ValueError, match="8 or 16 bytes"):
        read_passwd_file(b"\0" * 12)


def test_vncpasswd_rules():
    with pytest.raises(UserError, match="too short"):
        check_password("five5")
    assert check_password("sixsix") == "sixsix"
    assert check_password("0123456789") == "01234567"
    with pytest.raises(UserError, match="Latin-1"):
        check_password("пароль-123")


def test_generated_passwords_are_eight_random_unambiguous_characters():
    seen = {generate_password() for _ in range(200)}
    assert len(seen) == 200
    assert all(len(p) == 8 and not set(p) & set("0O1lI") for p in seen)


def _scripted_server(replies: list[bytes]) -> tuple[socket.socket, list[bytes]]:
    """A socketpair end that answers each client write with the next scripted reply; records what it got."""
    ours, theirs = socket.socketpair()
    got: list[bytes] = []

    def serve():
        theirs.sendall(replies[0])
        for reply in replies[1:]:
            got.append(theirs.recv(64))
            theirs.sendall(reply)
        theirs.close()

    threading.Thread(target=serve, daemon=True).start()
    return ours, got


def test_handshake_sends_the_des_reply_and_reads_the_refusal_reason():
    challenge = bytes(range(16))
    reason = b"Authentication failure"
    sock, got = _scripted_server([b"RFB 003.008\n", b"\x01\x02", challenge,
                                  struct.pack(">II", 1, len(reason)) + reason])
    with pytest.raises(AuthFailed, match="Authentication failure"):
        handshake(sock, "secret12")
    assert got[0] == b"RFB 003.008\n" and got[1] == b"\x02"
    assert got[2] == challenge_response("secret12", challenge)


def test_a_blacklisting_server_is_an_rfb_error_with_its_reason():
    reason = b"Too many security failures"
    sock, _ = _scripted_server([b"RFB 003.003\n", struct.pack(">II", 0, len(reason)) + reason])
    with pytest.raises(RFBError, match="Too many security failures"):
        handshake(sock, "secret12")
