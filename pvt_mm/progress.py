"""Run a command with its full output in a log file and print compact progress lines.

    python -m pvt_mm.progress LOG PHASE -- COMMAND [ARGS ...]

Used by ``tools/quickstart.sh`` so that a person sees one line per phase instead of pages of
mmengine config dumps. While COMMAND runs, stdout and stderr go to LOG only; from mmengine's
log lines this prints training progress (epoch, iteration, loss, ETA; at most one line per
30 s) and evaluation results as they appear. On failure it prints the tail of LOG and exits with COMMAND's status.
"""
import re
import subprocess
import sys
import time
from typing import Optional

# mmengine's LoggerHook lines, e.g.
# "Epoch(train)  [2][ 40/200]  base_lr: ... eta: 0:03:12  time: 1.61 ... loss: 0.83 ..."
TRAIN = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/(\d+)\].*?eta: (\S+).*?\sloss: ([\d.]+)')
VAL = re.compile(r'Epoch\((val|test)\)\s+(?:\[(\d+)\])?\[\s*\d+/\d+\]\s+coco/bbox_mAP: ([\d.-]+)'
                 r'.*?coco/bbox_mAP_50: ([\d.-]+)')
MAX_EPOCHS = re.compile(r'max_epochs=(\d+)')


def compact(line: str, max_epochs: Optional[int] = None) -> Optional[str]:
    """The progress line for one mmengine log line, or None if it is not a progress line."""
    match = TRAIN.search(line)
    if match:
        epoch, it, total, eta, loss = match.groups()
        of = f'/{max_epochs}' if max_epochs else ''
        return (f'  epoch {epoch}{of}  iter {int(it):>4}/{total}  loss {float(loss):.3f}  '
                f'ETA {eta}')
    match = VAL.search(line)
    if match:
        mode, epoch, ap, ap50 = match.groups()
        where = f'after epoch {epoch}' if mode == 'val' else 'of the checkpoint'
        return f'  evaluation {where}: COCO bbox AP {ap}, AP50 {ap50}'
    return None


def run(log: str, phase: str, command: list, tail: int = 40, every: float = 30) -> int:
    """Run ``command``; print at most one training line per ``every`` seconds (and each
    epoch's last one) and every evaluation line."""
    start = time.monotonic()
    print(f'[{phase}] started (full log: {log})', flush=True)
    with open(log, 'w') as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    position, pending, max_epochs, last_print = 0, '', None, 0.0
    while True:
        finished = proc.poll() is not None
        with open(log, errors='replace') as f:
            f.seek(position)
            pending += f.read()
            position = f.tell()
        *lines, pending = pending.split('\n')
        for line in lines:
            found = max_epochs is None and MAX_EPOCHS.search(line)
            if found:  # from the config mmengine logs before training
                max_epochs = int(found[1])
            text = compact(line, max_epochs)
            match = TRAIN.search(line)
            epoch_end = match and match[2] == match[3]
            if text and (not match or epoch_end or time.monotonic() - last_print >= every):
                print(text, flush=True)
                last_print = time.monotonic()
        if finished:
            break
        time.sleep(1)
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    if proc.returncode != 0:
        with open(log, errors='replace') as f:
            last = f.read().splitlines()[-tail:]
        print('\n'.join(last), file=sys.stderr)
        print(f'[{phase}] FAILED (exit {proc.returncode}) after {minutes}m{seconds:02d}s; '
              f'the last {len(last)} lines of {log} are above', file=sys.stderr, flush=True)
    else:
        print(f'[{phase}] done in {minutes}m{seconds:02d}s', flush=True)
    return proc.returncode


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--' not in argv or argv.index('--') == len(argv) - 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    split = argv.index('--')
    if split != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    (log, phase), command = argv[:split], argv[split + 1:]
    return run(log, phase, command)


if __name__ == '__main__':
    sys.exit(main())
