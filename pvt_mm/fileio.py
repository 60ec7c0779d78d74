"""Complete-or-nothing file output: the one temporary-file-and-rename used by checkpoint
writes (:mod:`pvt_mm.engine`), checkpoint downloads (:mod:`pvt_mm.checkpoint`) and ONNX
exports (:mod:`pvt_mm.deploy`). Imports nothing of pvt_mm."""
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Iterator, Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def replaced_atomically(path: Union[str, os.PathLike], suffix: str = '.tmp') -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an error
    it is renamed over ``path`` (readers see the old file or the new one, never a part), with
    the mode a plain write would give (``mkstemp`` makes 0600). On any error, interrupts
    included, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to produce.
        suffix: The temporary file's suffix (it is named ``.<name>.<random><suffix>``).
    """
    path = os.fspath(path)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)  # atomic on POSIX
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
