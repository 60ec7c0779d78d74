"""Checkpoint URLs: recognise them, download each once (complete or not at all) into the
torch hub cache, and give back the local file (:func:`local_checkpoint_path`)."""
import hashlib
import json
import os
import re
import zipfile
from urllib.parse import urlparse

from .allow_list import load_pth
from .errors import CheckpointError

URL_SCHEMES = ('http', 'https')


def is_url(path: str) -> bool:
    """Whether ``path`` names a checkpoint by an http(s) URL rather than a local file."""
    return urlparse(os.fspath(path)).scheme in URL_SCHEMES


def url_cache_path(url: str) -> str:
    """Where a checkpoint URL is cached: ``<torch hub dir>/checkpoints/<sha256 of the URL>/
    <file name>``. Each URL has its own directory, so two URLs ending in the same file name
    never share a file; the file keeps its name, so torch hub's ``<name>-<sha256 prefix>.pth``
    check still applies to it.

    Raises:
        CheckpointError: the URL names no file; give the URL of the ``.pth`` file itself.
    """
    import torch.hub
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'Checkpoint URL {url!r} names no file (its path ends with "/"); '
                              'give the URL of the .pth file itself.')
    digest = hashlib.sha256(url.encode()).hexdigest()
    return os.path.join(torch.hub.get_dir(), 'checkpoints', digest, name)


def _check_archive(path: str, name: str) -> None:
    """Refuse a downloaded file that is not a whole checkpoint, before it enters the cache.

    A ``torch.save`` zip archive must have its central directory (written last, so a cut
    body lacks it), one ``<archive>/data.pkl`` and intact CRCs; a safetensors file must be as
    long as its header says. A file in torch's legacy (non-zip) format has no such index and
    is checked by reading it safely.

    Args:
        path: The downloaded (temporary) file.
        name: The name it is cached under (``.safetensors`` picks that format).

    Raises:
        CheckpointError: the file is incomplete or not a checkpoint.
    """
    problem = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if not any(n.count('/') == 1 and n.endswith('/data.pkl') for n in names):
                    problem = 'a zip archive without the data.pkl of a torch.save file'
                else:
                    bad = archive.testzip()
                    if bad is not None:
                        problem = f'a damaged archive (CRC mismatch in {bad})'
        except (zipfile.BadZipFile, OSError) as exc:
            problem = f'a damaged archive ({exc})'
    elif name.endswith('.safetensors'):
        with open(path, 'rb') as f:
            head = f.read(8)
            size = int.from_bytes(head, 'little') if len(head) == 8 else -1
            header = f.read(size) if size > 0 else b''
        try:
            ends = [int(v['data_offsets'][1]) for k, v in json.loads(header).items()
                    if k != '__metadata__']
        except (ValueError, KeyError, TypeError, AttributeError):
            problem = 'not a safetensors file (unreadable header)'
        else:
            expected = 8 + size + max(ends, default=0)
            if os.path.getsize(path) != expected:
                problem = f'{os.path.getsize(path)} bytes where the header announces {expected}'
    else:
        load_pth(path)  # legacy torch.save format: only a full safe read can tell
    if problem is not None:
        raise CheckpointError(f'the file received is not a complete checkpoint: {problem}')


def _check_hash(name: str, digest: str) -> None:
    """torch hub's convention: a file named ``<name>-<hex>.<ext>`` must have a SHA-256 that
    begins with ``<hex>``."""
    import torch.hub
    match = re.search(torch.hub.HASH_REGEX, name)
    prefix = match.group(1) if match else ''
    if prefix and not digest.startswith(prefix):
        raise CheckpointError(f'its SHA-256 is {digest[:16]}..., but the file name {name!r} '
                              f'says it begins with {prefix!r} (a damaged or substituted file)')


def _download(url: str, cached: str) -> None:
    """Stream ``url`` into a temporary file beside ``cached`` and rename it into place only
    when it is complete: every announced byte arrived, the hash in its name (if any) matches,
    and it is a whole checkpoint archive (:func:`_check_archive`, which also catches a body
    cut short without a ``Content-Length``). The cache never holds a partial checkpoint.

    (``torch.hub.download_url_to_file`` keeps a body cut short by a dropped connection as if
    it were complete, so it is not used.)
    """
    import urllib.request

    from ..fileio import replaced_atomically
    print(f'Downloading {url} to {cached}', flush=True)
    try:
        with replaced_atomically(cached, suffix='.partial') as tmp:
            sha256 = hashlib.sha256()
            with open(tmp, 'wb') as out, urllib.request.urlopen(url, timeout=60) as response:
                expected = response.headers.get('Content-Length')
                for chunk in iter(lambda: response.read(1 << 20), b''):
                    sha256.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                received = out.tell()
            if expected is not None and received != int(expected):
                raise OSError(f'the connection closed after {received} of {expected} bytes')
            _check_hash(os.path.basename(cached), sha256.hexdigest())
            _check_archive(tmp, os.path.basename(cached))
    except Exception as exc:  # urllib raises URLError/HTTPError/OSError/... for a failed download
        raise CheckpointError(
            f'Cannot download checkpoint {url!r} into the torch hub cache {cached!r} '
            f'({type(exc).__name__}: {exc}). Check the URL and the network, or download the '
            f'file yourself, put it at {cached!r} (or anywhere) and point the config at the '
            'local path.') from exc


def local_checkpoint_path(path: str) -> str:
    """The local file of a checkpoint: ``path`` itself, or for an http(s) URL its copy in the
    torch hub cache (:func:`url_cache_path`), downloaded on first use.

    One process per cache directory downloads: the processes of a node (or of every node
    sharing the cache's file system) take an exclusive lock on ``<file>.lock`` beside the
    cached file, and the first one in downloads while the others wait for the lock and then
    read the finished file. This needs no process group, so it works the same before and
    after ``torch.distributed`` is initialised, whatever the launcher, and a failed download
    fails each waiting rank with the same clear error instead of leaving them at a barrier.

    Raises:
        CheckpointError: the download failed (the message names the URL and cache path).
    """
    path = os.fspath(path)
    if not is_url(path):
        return path
    cached = url_cache_path(path)
    if os.path.isfile(cached):
        return cached
    import fcntl
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached + '.lock', 'a') as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        if not os.path.isfile(cached):  # another process may have finished it meanwhile
            _download(path, cached)
    return cached


__all__ = ['URL_SCHEMES', 'is_url', 'url_cache_path', 'local_checkpoint_path']
