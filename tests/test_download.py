"""download_camvid_tiny on small archives the tests build: checks, atomic unpacking, reuse, offline.

No test touches the network: the URL is pointed at a file:// archive in tmp_path.
"""
import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from minseg.data import SegmentationDataset, download
from minseg.data.download import DownloadError, data_home, download_camvid_tiny


def add_file(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_archive(path, top="camvid_tiny/", extra=()):
    """A .tgz holding a two-image dataset under ``top``; ``extra`` adds (TarInfo, bytes) members."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, top + "codes.txt", b"Road\nSky\nVoid\n")
        for stem in ("b", "a"):
            add_file(tar, f"{top}images/{stem}.png", png_bytes(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)))
            add_file(tar, f"{top}labels/{stem}_P.png", png_bytes(rng.integers(0, 3, (6, 7), dtype=np.uint8)))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.fixture
def serve(monkeypatch):
    """Point download_camvid_tiny at a local archive with that archive's true size and checksum."""
    def point_at(archive, size=None, md5=None):
        monkeypatch.setattr(download, "CAMVID_TINY_URL", archive.as_uri())
        monkeypatch.setattr(download, "CAMVID_TINY_SIZE", archive.stat().st_size if size is None else size)
        monkeypatch.setattr(download, "CAMVID_TINY_MD5_FIRST_MIB",
                            hashlib.md5(archive.read_bytes()[:2 ** 20]).hexdigest() if md5 is None else md5)
    return point_at


def test_download_checks_unpacks_and_loads(tmp_path, serve):
    serve(build_archive(tmp_path / "camvid_tiny.tgz"))
    cache = tmp_path / "cache"
    folder = download_camvid_tiny(dest=cache)
    assert folder == cache / "camvid_tiny"
    ds = SegmentationDataset(folder)
    assert ds.stems == ["a", "b"] and ds.codes == ["Road", "Sky", "Void"] and ds.images.shape == (2, 6, 7, 3)
    # Nothing left over: no partial archive, no temporary extraction folder.
    assert [path.name for path in cache.iterdir()] == ["camvid_tiny"]


def test_existing_copy_is_reused_without_fetching(tmp_path, serve, monkeypatch):
    serve(build_archive(tmp_path / "camvid_tiny.tgz"))
    folder = download_camvid_tiny(dest=tmp_path / "cache")

    def no_network(*args, **kwargs):
        raise AssertionError("fetched again although the dataset was there")

    monkeypatch.setattr(download, "_fetch", no_network)
    assert download_camvid_tiny(dest=tmp_path / "cache") == folder
    # A folder that already is the dataset is used as it is (what --data DIR passes).
    assert download_camvid_tiny(dest=folder) == folder


def test_cache_folder_comes_from_minseg_data_then_home(tmp_path, serve, monkeypatch):
    serve(build_archive(tmp_path / "camvid_tiny.tgz"))
    monkeypatch.setenv("MINSEG_DATA", str(tmp_path / "from_env"))
    assert download_camvid_tiny() == tmp_path / "from_env" / "camvid_tiny"
    monkeypatch.delenv("MINSEG_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home() == tmp_path / "home" / ".cache" / "minseg"
    assert data_home(tmp_path / "given") == tmp_path / "given"


def test_archive_with_files_at_top_level_is_accepted(tmp_path, serve):
    serve(build_archive(tmp_path / "flat.tgz", top=""))
    folder = download_camvid_tiny(dest=tmp_path / "cache")
    assert len(SegmentationDataset(folder)) == 2


@pytest.mark.parametrize("wrong, message", [("size", "has .* bytes, expected 123"), ("md5", "md5 .* expected 0123")])
def test_wrong_size_or_checksum_is_rejected_and_nothing_kept(tmp_path, serve, wrong, message):
    archive = build_archive(tmp_path / "camvid_tiny.tgz")
    serve(archive, size=123 if wrong == "size" else None, md5="0123" + "0" * 28 if wrong == "md5" else None)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=message):
        download_camvid_tiny(dest=cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("name, kind", [("camvid_tiny/../../escaped.txt", tarfile.REGTYPE),
                                        ("/tmp/minseg_absolute.txt", tarfile.REGTYPE),
                                        ("camvid_tiny/images/link.png", tarfile.SYMTYPE)])
def test_unsafe_members_are_refused(tmp_path, serve, name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    else:
        info.size = 4
    serve(build_archive(tmp_path / "evil.tgz", extra=[(info, b"evil" if kind == tarfile.REGTYPE else b"")]))
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(DownloadError, match="refusing"):
        download_camvid_tiny(dest=cache)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert list(cache.iterdir()) == []


def test_archive_that_is_not_a_tgz_is_reported(tmp_path, serve):
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"<html>Access denied</html>")
    serve(fake)
    with pytest.raises(DownloadError, match="not a readable .tgz"):
        download_camvid_tiny(dest=tmp_path / "cache")


def test_offline_fails_with_a_hint_about_local_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CAMVID_TINY_URL", "file:///nonexistent/camvid_tiny.tgz")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="could not download file:///nonexistent") as error:
        download_camvid_tiny(dest=cache)
    assert "--data DIR" in str(error.value) and "MINSEG_DATA" in str(error.value)
    assert list(cache.iterdir()) == []


def test_incomplete_existing_folder_is_not_overwritten(tmp_path, serve):
    serve(build_archive(tmp_path / "camvid_tiny.tgz"))
    (tmp_path / "cache" / "camvid_tiny" / "images").mkdir(parents=True)
    with pytest.raises(DownloadError, match="not a complete dataset folder.*delete it"):
        download_camvid_tiny(dest=tmp_path / "cache")
