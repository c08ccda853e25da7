import os
from pathlib import Path

import pytest

from spinbot.errors import StorageKeyError
from spinbot.storage.base import artifact_key, check_key, open_store
from spinbot.storage.local import LocalStore


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "jobs/../../x",
        "/etc/passwd",
        "jobs//x",
        "jobs/./x",
        "C:/windows",
        "jobs\\..\\x",
        "",
        "jobs/x/",
        ".hidden/x",
        "jobs/a b",
    ],
)
def test_keys_that_could_leave_the_root_are_refused(key):
    with pytest.raises(StorageKeyError):
        check_key(key)


def test_local_store_refuses_bad_keys_for_every_operation(tmp_path: Path):
    store = LocalStore(tmp_path / "root")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    for key in ("../secret.txt", "/" + str(outside).lstrip("/")):
        with pytest.raises(StorageKeyError):
            store.get_bytes(key)
        with pytest.raises(StorageKeyError):
            store.upload(src, key)
        with pytest.raises(StorageKeyError):
            store.put_bytes(key, b"x")
        with pytest.raises(StorageKeyError):
            store.download(key, tmp_path / "out")
    assert outside.read_text() == "secret"
    assert store.list("") == []  # nothing was written anywhere


def test_symlink_inside_the_root_cannot_escape(tmp_path: Path):
    store = LocalStore(tmp_path / "root")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f.txt").write_text("outside")
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    with pytest.raises(StorageKeyError, match="leaves the store root"):
        store.get_bytes("link/f.txt")


def test_roundtrip_list_and_delete(tmp_path: Path):
    store = open_store(f"file://{tmp_path / 'root'}")
    key = artifact_key("job1", "f5_to_tts", "speech.wav")
    assert key == "jobs/job1/f5_to_tts/speech.wav"
    src = tmp_path / "a.wav"
    src.write_bytes(b"RIFF....")
    store.upload(src, key)
    store.put_bytes("jobs/job1/script/script.txt", b"hello")
    assert store.exists(key) and store.size(key) == 8
    assert store.list("jobs/job1") == ["jobs/job1/f5_to_tts/speech.wav", "jobs/job1/script/script.txt"]
    store.download(key, tmp_path / "copy.wav")
    assert (tmp_path / "copy.wav").read_bytes() == b"RIFF...."
    store.put_bytes("jobs/job2/script/script.txt", b"other")
    assert store.delete_prefix("jobs/job1") == 2
    assert store.list("jobs/job1") == []
    with pytest.raises(FileNotFoundError):
        store.get_bytes(key)
    assert not (tmp_path / "root" / "jobs" / "job1").exists()  # no empty folders left per deleted job
    assert store.get_bytes("jobs/job2/script/script.txt") == b"other"


def test_artifact_key_refuses_hostile_ids():
    with pytest.raises(StorageKeyError):
        artifact_key("..", "node", "x")
    with pytest.raises(StorageKeyError):
        artifact_key("job", "node", "../../x")


def test_a_key_part_ending_in_a_newline_is_refused():
    with pytest.raises(StorageKeyError, match="invalid part"):
        check_key("jobs/j/tts\n/speech.wav")


def test_local_listing_skips_a_folder_deleted_while_it_walks(tmp_path, monkeypatch):
    """Two uploads at once: one's quota check listed the uploads while the other deleted its folder, and the
    listing raised FileNotFoundError (a 500)."""
    import os
    import shutil

    from spinbot.storage.local import LocalStore

    store = LocalStore(tmp_path)
    for key in ("uploads/k/a/voice.wav", "uploads/k/b/voice.wav"):
        store.put_bytes(key, b"x")
    doomed = str(tmp_path / "uploads" / "k" / "b")
    scandir = os.scandir

    def scandir_after_a_delete(path="."):
        if not isinstance(path, int) and os.fspath(path) == doomed:  # (rmtree scans by descriptor)
            shutil.rmtree(doomed)  # another request removes it just before the walk reaches it
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_after_a_delete)
    assert store.list("uploads/") == ["uploads/k/a/voice.wav"]
