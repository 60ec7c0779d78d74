"""Complete-or-nothing file output: the one temporary-file-and-rename used by checkpoint
writes (:mod:`pvt_mm.hooks.atomic`), checkpoint downloads (:mod:`pvt_mm.checkpoint`) and ONNX
exports (:mod:`pvt_mm.deploy`). Imports nothing of pvt_mm."""
import os
import os.path as osp
import secrets
from contextlib import contextmanager
from typing import Iterator, Union


def _create_beside(path: str, suffix: str) -> str:
    """Create a new empty file ``.<name>.<random><suffix>`` beside ``path`` with mode 0666
    less the process umask, as a plain ``open(path, 'w')`` would (``tempfile.mkstemp`` gives
    0600, and reading the umask means setting it, which races with other threads)."""
    directory, name = osp.split(path)
    while True:
        tmp = osp.join(directory, f'.{name}.{secrets.token_hex(4)}{suffix}')
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # astronomically rare: draw another name
            continue


@contextmanager
def replaced_atomically(path: Union[str, os.PathLike], suffix: str = '.tmp') -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an error
    it is renamed over ``path`` (readers see the old file or the new one, never a part), with
    the mode a plain write would give. On any error, interrupts
    included, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to produce.
        suffix: The temporary file's suffix (it is named ``.<name>.<random><suffix>``).
    """
    path = osp.abspath(os.fspath(path))
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = _create_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)  # atomic on POSIX
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
