"""The command-line conventions that pvt_mm's tools share: the ``--cfg-options`` flag, sizes
written ``HxW``, and how a tool ends (its result line on stdout, or one ``error: ...`` line on stderr and a
non-zero exit status for an error the user can fix)."""
import argparse
import sys
from typing import Callable, Optional, Tuple, Type, Union

ErrorTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def add_cfg_options(parser: argparse.ArgumentParser, example: str) -> None:
    """Add mmengine's ``--cfg-options k=v ...`` config overrides (parsed by ``DictAction``).

    Args:
        parser: The tool's parser.
        example: An example override for the help, e.g. ``'model.backbone.arch=b2_li'``.
    """
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help=f'override config settings, e.g. {example}')


def hw_size(text: str) -> Tuple[int, int]:
    """An argparse ``type``: ``'HxW'`` -> ``(H, W)``, both positive."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: give a size as HxW, e.g. 512x672') from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: both sides must be positive')
    return h, w


def with_copy(text: str, out: Optional[str]) -> str:
    """``text`` (a tool's report), also written to the file ``out`` when one is given."""
    if out:
        with open(out, 'w') as f:
            f.write(text + '\n')
    return text


def run_tool(work: Callable[[], Optional[str]], user_errors: ErrorTypes, status: int = 2) -> int:
    """Run a tool's ``work`` and say how it ended.

    Args:
        work: The tool's body; it returns the line that reports its result (printed on
            stdout), or ``None`` when it printed its own.
        user_errors: The exceptions that mean a wrong input the user can fix; each is
            printed as one ``error: ...`` line on stderr instead of a traceback. Any other
            exception propagates (a bug, with its traceback).
        status: The exit status for such an error.

    Returns:
        The exit status: 0, or ``status`` after a user error.
    """
    try:
        line = work()
    except user_errors as exc:
        print(f'error: {exc}', file=sys.stderr)
        return status
    if line is not None:
        print(line)
    return 0
