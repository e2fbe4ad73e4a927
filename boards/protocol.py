"""The UART framing between a host and a board (``docs/boards.md``), defined once.

Host to board::

    COMMAND_FRAME                              1 byte, 0x46 ('F')
    input elements                             H * W * C * in_bytes bytes
    CRC-8 of the input element bytes           1 byte

Board to host::

    status                                     1 byte (STATUS_*)
    (only after STATUS_OK:)
    output elements                            H' * W' * C' * out_bytes bytes
    CRC-8 of the output element bytes          1 byte

Elements are in raster order, channels last. Each is ``ceil(bits / 8)`` bytes, little
endian, two's complement (sign-extended to whole bytes); the board keeps the low ``bits``
bits of an input element. CRC-8 is the SMBus CRC: polynomial x^8 + x^2 + x + 1 (0x07),
initial value 0, no reflection, no final XOR (check value 0xF4 for ``b"123456789"``).

This module holds the constants, the host side (:func:`crc8`, :func:`encode_frame`,
:func:`decode_reply`) and the same CRC as Amaranth logic (:func:`crc8_next`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Value

__all__ = ["COMMAND_FRAME", "STATUS_OK", "STATUS_BAD_CHECKSUM", "STATUS_FRAMING_ERROR", "STATUS_TIMEOUT",
           "STATUS_NAMES", "CRC8_POLYNOMIAL", "element_bytes", "crc8", "crc8_next", "encode_frame",
           "decode_reply", "reply_length"]

COMMAND_FRAME = 0x46
STATUS_OK = 0x00
STATUS_BAD_CHECKSUM = 0x01          # the frame's CRC-8 did not match: not computed
STATUS_FRAMING_ERROR = 0x02         # a byte of the frame had a low stop bit: frame dropped
STATUS_TIMEOUT = 0x03               # the host stopped sending mid-frame: frame dropped
STATUS_NAMES = {STATUS_OK: "ok", STATUS_BAD_CHECKSUM: "bad checksum",
                STATUS_FRAMING_ERROR: "framing error", STATUS_TIMEOUT: "timeout"}
CRC8_POLYNOMIAL = 0x07


def element_bytes(bits: int) -> int:
    """Bytes that carry one ``bits``-bit element."""
    return (bits + 7) // 8


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8/SMBus of ``data`` (bitwise, most significant bit first)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC8_POLYNOMIAL if crc & 0x80 else crc << 1) & 0xFF
    return crc


def crc8_next(crc: Value, byte: Value) -> Value:
    """The CRC-8 register (8 bits) after one more ``byte`` (8 bits): combinational XORs."""
    bits = [crc[k] ^ byte[k] for k in range(8)]
    for _ in range(8):
        feedback = bits[7]
        shifted = [Const(0, 1)] + bits[:7]
        bits = [shifted[k] ^ feedback if (CRC8_POLYNOMIAL >> k) & 1 else shifted[k] for k in range(8)]
    return Cat(*bits)


def _element_data(values, bits: int) -> bytes:
    n = element_bytes(bits)
    return b"".join(int(v).to_bytes(n, "little", signed=True) for v in np.asarray(values).ravel())


def encode_frame(frame, bits: int) -> bytes:
    """The bytes a host sends for one (H, W, C) integer frame of ``bits``-bit elements."""
    data = _element_data(frame, bits)
    return bytes([COMMAND_FRAME]) + data + bytes([crc8(data)])


def reply_length(shape, bits: int) -> int:
    """Bytes of a successful reply for an output of ``shape`` (H', W', C'): status, elements, CRC."""
    return 1 + int(np.prod(shape)) * element_bytes(bits) + 1


def decode_reply(reply: bytes, shape, bits: int) -> np.ndarray:
    """The (H', W', C') int64 output in a board's reply; ``ValueError`` for an error status,
    a short reply or a CRC mismatch."""
    if not reply:
        raise ValueError("reply is empty")
    if reply[0] != STATUS_OK:
        raise ValueError(f"board status 0x{reply[0]:02x} ({STATUS_NAMES.get(reply[0], 'unknown')})")
    if len(reply) != reply_length(shape, bits):
        raise ValueError(f"reply has {len(reply)} bytes, expected {reply_length(shape, bits)}")
    data, check = reply[1:-1], reply[-1]
    if crc8(data) != check:
        raise ValueError(f"reply CRC-8 0x{check:02x} does not match its data (0x{crc8(data):02x})")
    n = element_bytes(bits)
    values = [int.from_bytes(data[k:k + n], "little", signed=True) for k in range(0, len(data), n)]
    return np.array(values, dtype=np.int64).reshape(shape)
