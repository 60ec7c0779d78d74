"""Hooks that stop or report non-finite numbers: :class:`FiniteLossHook` stops training at
the first NaN/Inf loss before it can be checkpointed; :class:`FiniteInputHook` reads the
input checks still in flight when a run ends."""
import torch
from mmengine.hooks import Hook


class FiniteLossHook(Hook):
    """Stop training at the first NaN/Inf loss, naming the iteration and epoch.

    Runs before the checkpoint hook, so the last checkpoint on disk is never one with
    corrupted weights.
    """

    priority = 'HIGHEST'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = outputs['loss']
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            parts = ', '.join(f'{k}={float(v.detach().float().mean()):.4g}' for k, v in outputs.items()
                              if isinstance(v, torch.Tensor) and v.numel())
            raise FloatingPointError(
                f'Loss is {float(loss)} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}); '
                f'training stopped so no corrupted checkpoint is saved. Losses: {parts}. Lower the '
                'learning rate, enable gradient clipping (optim_wrapper.clip_grad), check the data, '
                'then resume from the last checkpoint with --resume.')


class FiniteInputHook(Hook):
    """Read the input checks still in flight when a train, val or test run ends.

    On CUDA PVT's NaN/Inf input check is read a few calls late (no host sync, see
    :class:`pvt_mm.models.input_checks.FiniteInputCheck`); without this hook the checks of the last
    batches of a run would never be read.
    """

    priority = 'HIGHEST'

    def _finish(self, runner) -> None:
        from ..models.input_checks import finish_input_checks
        finish_input_checks(runner.model)

    def after_train_epoch(self, runner) -> None:
        self._finish(runner)

    def after_train(self, runner) -> None:  # iteration-based loops end without an epoch
        self._finish(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish(runner)


__all__ = ['FiniteLossHook', 'FiniteInputHook']
