"""Checksummed protobuf files: every `.pb` a system directory holds (schema 2 and later).

A record is an 8-byte magic, the SHA-256 of the payload (32 bytes), then the serialized message.
A protobuf parser accepts many damaged byte strings without complaint (a flipped byte usually
just changes a value), so without the checksum a corrupt path or state could be read as a
different, valid one. Every way a file can go wrong is told apart, naming the file: zero length,
shorter than the header, a checksum mismatch (truncated or changed), no header at all (garbage,
or a file mtsys did not write), and a payload that does not parse.

Schema-1 systems wrote bare messages; their files are read without a header until the store
migrates them (`mtsys.system.store`).
"""

from __future__ import annotations

import hashlib

from mtsys import errors

MAGIC = b"MTSYSPB\x02"
_HEADER = len(MAGIC) + 32


def frame(payload: bytes) -> bytes:
  """The record of a serialized message."""
  return MAGIC + hashlib.sha256(payload).digest() + payload


def is_framed(data: bytes) -> bool:
  return data.startswith(MAGIC)


def unframe(data: bytes, path: str, legacy_ok: bool) -> bytes:
  """The payload of a record, checked; a bare schema-1 message when `legacy_ok`.

  Raises:
    CorruptFileError: naming `path` and what is wrong with it.
  """
  if not data:
    raise errors.CorruptFileError(f"{path} is empty (zero length): the file is corrupt.")
  if is_framed(data):
    if len(data) < _HEADER:
      raise errors.CorruptFileError(
          f"{path} is truncated: {len(data)} bytes, shorter than its {_HEADER}-byte header.")
    digest, payload = data[len(MAGIC):_HEADER], data[_HEADER:]
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
      raise errors.CorruptFileError(
          f"Checksum mismatch in {path}: the file is corrupt (truncated or changed; expected "
          f"sha256 {digest.hex()}, got {actual.hex()}).")
    return payload
  if legacy_ok:
    return data
  raise errors.CorruptFileError(
      f"{path} has no mtsys record header: it is corrupt (garbage, or not written by mtsys).")


def parse(data: bytes, path: str, message, legacy_ok: bool):
  """`message` parsed from a record's bytes (see `unframe`); returns it."""
  payload = unframe(data, path, legacy_ok)
  try:
    message.ParseFromString(payload)
  except Exception as e:  # DecodeError: a damaged protobuf (only possible for schema-1 files).
    raise errors.CorruptFileError(
        f"Cannot parse {path} as {message.DESCRIPTOR.name}: {e}") from e
  return message
