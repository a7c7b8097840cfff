"""Graph's file.hashes.quickXorHash, which rclone's onedrive backend checks every transfer by: on a file written
in one piece (simple upload, WOPI PutFile), and on one an upload session made of fragments, where it is combined
from the fragments' own hashes without the content being read again."""

import base64
import hashlib

import pytest

from wopihost import quickxor, sessions

from .test_graph_upload_pieces import upload_in_fragments
from .test_graph_uploads import content_of, data, simple_upload
from .test_quickxor import rclone_quickxor


def item_of(graph, item_id: str) -> dict:
    response = graph.get(f"me/drive/items/{item_id}")
    assert response.status_int == 200, response.body
    return response.json


def sha256_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest().upper()


@pytest.mark.parametrize("size", [0, 1, 159, 160, 161, 5000])
def test_a_simple_upload_has_both_hashes(graph, size):
    content = data(size, seed=size)
    item = simple_upload(graph, "a.bin", content)
    expected = {"quickXorHash": quickxor.b64digest(content), "sha256Hash": sha256_hash(content)}
    assert item["file"]["hashes"] == expected
    assert item_of(graph, item["id"])["file"]["hashes"] == expected


@pytest.mark.parametrize(("size", "step"), [(1000, 333), (1007, 160), (4099, 1000), (161, 7)])
def test_a_file_an_upload_session_made_has_the_quickxorhash_of_its_bytes(graph, size, step):
    content = data(size, seed=step)
    item_id = upload_in_fragments(graph, content, step)
    assert content_of(graph, item_id) == content
    # no SHA-256: that would take reading the content again, which completion never does
    assert item_of(graph, item_id)["file"]["hashes"] == {"quickXorHash": quickxor.b64digest(content)}


@pytest.mark.parametrize("fragments", [5, 4 * 4 + 3, 4 * 4 * 4 + 1])
def test_the_quickxorhash_survives_the_merge_of_many_fragments(graph, services, monkeypatch, fragments):
    """Fragments past MAX_BLOBS are copied into fewer blobs before completion (sessions.merge_pieces), once or
    several times over: each copy carries the hash of what it joined."""
    monkeypatch.setattr(sessions, "MAX_BLOBS", 4)
    content = data(fragments * 3 + 1, seed=fragments)
    item_id = upload_in_fragments(graph, content, 3)
    assert len(services.files.get(item_id).content.blobs) <= 4
    assert item_of(graph, item_id)["file"]["hashes"] == {"quickXorHash": quickxor.b64digest(content)}


def test_rclone_computes_the_quickxorhash_graph_answers(graph, tmp_path):
    """The hashes as rclone's own implementation computes them from the bytes, for a simple upload and a session."""
    small, big = data(777, seed=1), data(3 * 1024 + 5, seed=2)
    simple = simple_upload(graph, "small.bin", small)
    session = item_of(graph, upload_in_fragments(graph, big, 1000))
    sent = tmp_path / "sent"  # tmp_path holds the server's data directory too
    sent.mkdir()
    (sent / "small.bin").write_bytes(small)
    (sent / "big.bin").write_bytes(big)
    assert rclone_quickxor(sent) == {
        "small.bin": simple["file"]["hashes"]["quickXorHash"],
        "big.bin": session["file"]["hashes"]["quickXorHash"],
    }


def test_a_file_put_by_wopi_shows_its_quickxorhash_to_graph(graph, client_for, services):
    item = simple_upload(graph, "doc.docx", b"")
    wopi = client_for(services.files.get(item["id"]))
    content = data(2000, seed=7)
    assert wopi.put_file(content).status_int == 200
    hashes = item_of(graph, item["id"])["file"]["hashes"]
    assert hashes == {"quickXorHash": quickxor.b64digest(content), "sha256Hash": sha256_hash(content)}
    info = wopi.check_file_info().json
    assert info["SHA256"] == base64.b64encode(hashlib.sha256(content).digest()).decode()  # WOPI's unchanged
    assert "quickXorHash" not in info and "QuickXorHash" not in info


def test_a_copy_keeps_the_quickxorhash(graph):
    content = data(500)
    item = simple_upload(graph, "a.bin", content)
    copy = graph.post_json(f"me/drive/items/{item['id']}/copy", {"name": "b.bin"})
    assert copy.status_int == 202, copy.body
    copied = graph.get("me/drive/root:/b.bin").json
    assert copied["file"]["hashes"]["quickXorHash"] == quickxor.b64digest(content)
