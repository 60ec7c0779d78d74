"""The runner hook that makes a detector's / segmentor's results independent of the batch
it is in (issue 27; docs/batch_invariance.md)."""
from typing import Optional, Sequence

from mmengine.hooks import Hook


class BatchInvariantHook(Hook):
    """Carry each image's valid size into every forward of the runner's model, and mask its
    neck and heads (:class:`pvt_mm.models.batch_invariance.BatchInvariance`).

    Installed at ``before_run`` on the model inside any DDP wrapper, so it acts in
    ``train_step`` (loss), ``val_step`` / ``test_step`` (predict) and ``tools/test.py`` alike;
    removed at ``after_run``. A forward hook, not a data preprocessor: the valid sizes must
    be set for exactly the forward's duration (and unset when it raises), which only hooks
    around the forward can do; a preprocessor runs before it and cannot leave it.

    Args:
        mask_modules: The model's attributes whose maps are masked (default: the neck, the
            dense / decode heads and a two-stage detector's RoI extractors); ``()`` carries
            the valid sizes to the backbone only.
    """

    priority = 'VERY_HIGH'

    def __init__(self, mask_modules: Optional[Sequence[str]] = None) -> None:
        from ..models.batch_invariance import DEFAULT_MASK_MODULES
        self.mask_modules = tuple(DEFAULT_MASK_MODULES if mask_modules is None else mask_modules)
        self._installed = None

    def before_run(self, runner) -> None:
        from ..models.batch_invariance import enable_batch_invariance
        if self._installed is None:
            self._installed = enable_batch_invariance(runner.model, self.mask_modules)

    def after_run(self, runner) -> None:
        if self._installed is not None:
            self._installed.remove()
            self._installed = None


__all__ = ['BatchInvariantHook']
