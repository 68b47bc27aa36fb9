"""Fetch fastai's CAMVID_TINY archive once, check it, and unpack it into a cache folder.

The cache folder is ``dest``, else ``$MINSEG_DATA``, else ``~/.cache/minseg``. A run that is
cut off never leaves a half-written dataset behind: the archive goes to a temporary file, is
checked (size, and md5 of its first MiB, as fastai records it), is unpacked into a temporary
folder beside the target, and only then renamed into place; a rename within one folder is
atomic. Offline, the download fails within seconds and says how to use a local copy instead.
Only the standard library is used (``urllib``, ``tarfile``, ``hashlib``).
"""
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

__all__ = ["download_camvid_tiny", "download_and_extract", "is_dataset_folder", "data_home", "DownloadError"]

CAMVID_TINY_URL = "https://s3.amazonaws.com/fast-ai-sample/camvid_tiny.tgz"
# fastai's checks.txt records the size and the md5 of the first MiB (not of the whole file).
CAMVID_TINY_SIZE = 2_314_212
CAMVID_TINY_MD5_FIRST_MIB = "2cf6daf91b7a2083ecfa3e9968e9d915"
CHECKSUM_BYTES = 2 ** 20
# Seconds to wait for a connection or for the next block of data: offline should fail fast.
TIMEOUT_SECONDS = 10

_LOCAL_COPY_HINT = (
    "To use a copy you already have, extract camvid_tiny.tgz and point minseg at the folder that "
    "holds images/, labels/ and codes.txt: `python examples/camvid_tiny.py --data DIR`, or set "
    "the environment variable MINSEG_DATA=DIR (in Python: download_camvid_tiny(dest=DIR)).")


class DownloadError(RuntimeError):
    """The dataset could not be fetched, checked or unpacked; the message says why and what to do."""


def data_home(dest=None):
    """The cache folder: ``dest``, else ``$MINSEG_DATA``, else ``~/.cache/minseg``."""
    if dest is None:
        dest = os.environ.get("MINSEG_DATA") or "~/.cache/minseg"
    return Path(dest).expanduser()


def is_dataset_folder(path):
    """True when ``path`` has the fastai segmentation layout: codes.txt, labels/ and a non-empty images/."""
    path = Path(path)
    images = path / "images"
    return ((path / "codes.txt").is_file() and (path / "labels").is_dir()
            and images.is_dir() and any(images.iterdir()))


def download_camvid_tiny(dest=None):
    """The CAMVID_TINY folder (images/, labels/, codes.txt), downloaded on first use.

    ``dest`` (or ``$MINSEG_DATA``) may name the cache folder, which then receives
    ``camvid_tiny/``, or a folder that already is the dataset, which is used as it is.
    """
    cache = data_home(dest)
    if is_dataset_folder(cache):
        return cache
    return download_and_extract(CAMVID_TINY_URL, cache / "camvid_tiny",
                                CAMVID_TINY_SIZE, CAMVID_TINY_MD5_FIRST_MIB)


def download_and_extract(url, target, expected_size, expected_md5_first_mib):
    """Fetch the .tgz at ``url``, check it, and unpack its dataset folder as ``target``.

    Returns ``target`` (a Path) at once when it already holds a dataset.
    """
    target = Path(target)
    if is_dataset_folder(target):
        return target
    if target.exists():
        raise DownloadError(
            f"{target} exists but is not a complete dataset folder (it needs images/, labels/ and "
            f"codes.txt); delete it and run again. {_LOCAL_COPY_HINT}")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    # Temporary names start with "." and live beside the target so the final rename stays
    # within one file system (and is therefore atomic).
    handle, archive = tempfile.mkstemp(dir=parent, prefix=f".{target.name}-", suffix=".tgz.part")
    os.close(handle)
    archive = Path(archive)
    try:
        print(f"minseg: downloading {url} to {target}", file=sys.stderr)
        _fetch(url, archive)
        _verify(archive, url, expected_size, expected_md5_first_mib)
        workdir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}-", suffix=".extracting"))
        try:
            _safe_extract(archive, workdir, url)
            root = _find_dataset_root(workdir, target.name, url)
            try:
                os.replace(root, target)
            except OSError:
                # Another process may have finished the same download first: keep its copy.
                if not is_dataset_folder(target):
                    raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        archive.unlink(missing_ok=True)
    return target


def _fetch(url, path, timeout=TIMEOUT_SECONDS):
    """Stream ``url`` into the file ``path``; any network trouble becomes a DownloadError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as file:
            shutil.copyfileobj(response, file, CHECKSUM_BYTES)
    # URLError covers "no network" and HTTP errors, OSError timeouts and resets, HTTPException a
    # connection that closes mid-file, ValueError a malformed URL.
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"could not download {url} ({type(error).__name__}: {reason}); this machine may be "
            f"offline. {_LOCAL_COPY_HINT}") from error


def _verify(archive, url, expected_size, expected_md5_first_mib):
    size = archive.stat().st_size
    if size != expected_size:
        raise DownloadError(
            f"the file downloaded from {url} has {size} bytes, expected {expected_size}: the download "
            f"was cut short or the file on the server changed; run again. {_LOCAL_COPY_HINT}")
    with open(archive, "rb") as file:
        md5 = hashlib.md5(file.read(CHECKSUM_BYTES)).hexdigest()
    if md5 != expected_md5_first_mib:
        raise DownloadError(
            f"the file downloaded from {url} has md5 {md5} (of its first MiB), expected "
            f"{expected_md5_first_mib}: it is not the expected archive. {_LOCAL_COPY_HINT}")


def _safe_extract(archive, dest, url):
    """Unpack ``archive`` into ``dest``, refusing members that could land outside it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or member.name.startswith("\\"):
                    raise DownloadError(f"the archive from {url} holds the unsafe path {member.name!r}; "
                                        "refusing to extract it")
                # A dataset needs only files and folders; links and devices could point anywhere.
                if not (member.isfile() or member.isdir()):
                    raise DownloadError(f"the archive from {url} holds {member.name!r}, which is not a "
                                        "regular file or folder; refusing to extract it")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second line of defence
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:  # a damaged gzip stream raises OSError
        raise DownloadError(f"the file downloaded from {url} is not a readable .tgz archive ({error})") from error


def _find_dataset_root(workdir, name, url):
    """The unpacked dataset folder: ``workdir/name``, ``workdir`` itself, or its only sub-folder."""
    folders = [path for path in workdir.iterdir() if path.is_dir()]
    candidates = [workdir / name, workdir] + (folders if len(folders) == 1 else [])
    for candidate in candidates:
        if is_dataset_folder(candidate):
            return candidate
    found = sorted(path.name for path in workdir.iterdir())
    raise DownloadError(f"the archive from {url} holds {found}, not a folder with images/, labels/ "
                        "and codes.txt")
