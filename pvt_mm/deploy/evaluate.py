"""An mmengine model whose ``test_step`` runs an exported file in ONNX Runtime, between the
config's own data preprocessor and post-processing, so that mmengine's test loop and the
config's evaluator score it exactly as ``tools/test.py`` scores the PyTorch model."""
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn

from .export import model_family
from .errors import DeployError
from .runner import ORTClassifier, ORTDetector, ORTSegmentor, runner_for


def _classification_samples(logits: torch.Tensor, samples: list) -> list:
    """What mmpretrain's ``ClsHead.predict`` makes of a head's logits: the softmax scores and
    their argmax, set on each data sample through ``DataSample``'s public setters."""
    scores = F.softmax(logits, dim=1)
    labels = scores.argmax(dim=1, keepdim=True)
    return [sample.set_pred_score(score).set_pred_label(label)
            for sample, score, label in zip(samples, scores, labels)]


class ORTModel(BaseModel):
    """Test-only model over an ONNX file exported with ``part='model'``.

    Args:
        path: The ``.onnx`` file.
        model: The config's PyTorch model (its weights are not used): its data preprocessor
            prepares the batch and its head turns the file's outputs into data samples.
        **runner_kwargs: Passed to the ONNX Runtime runner (e.g. ``num_threads``).
    """

    def __init__(self, path: Union[str, Path], model: nn.Module, **runner_kwargs) -> None:
        super().__init__(data_preprocessor=model.data_preprocessor)
        self.family = model_family(model)
        self.runner = runner_for(path, **runner_kwargs)
        expected = {'detector': ORTDetector, 'classifier': ORTClassifier,
                    'segmentor': ORTSegmentor}[self.family]
        if not isinstance(self.runner, expected):
            raise DeployError(f'{path} was not exported end to end from a {self.family} '
                              f"(outputs {self.runner.output_names}); export it with --part model "
                              'from the same config.')
        if self.family == 'classifier':
            from mmpretrain.models.heads import ClsHead
            if type(model.head).predict is not ClsHead.predict:
                raise DeployError(f'{type(model.head).__name__} turns logits into predictions '
                                  "its own way; only heads that use ClsHead's (softmax scores, "
                                  'argmax label) are evaluated from an exported file.')
        self._torch_model = [model]  # a list: not a submodule, not moved or wrapped

    def test_step(self, data: dict) -> list:
        data = self.data_preprocessor(data, False)
        inputs, samples = data['inputs'].float(), data['data_samples']
        model = self._torch_model[0]
        if self.family == 'detector':
            return self.runner.predict(inputs, samples)
        if self.family == 'classifier':
            return _classification_samples(self.runner.predict(inputs), samples)
        return model.postprocess_result(self.runner.predict(inputs), samples)

    val_step = test_step

    def forward(self, *args, **kwargs):
        raise DeployError('ORTModel only evaluates (test_step); it does not train.')
