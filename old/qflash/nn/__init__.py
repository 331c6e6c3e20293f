"""qflash for vision transformers: patch timm-layout attention modules, calibrate static scales.

    report = qflash.patch(model, recipe=intsoftmax.Recipe.default())  # every ViT / DeiT / Swin attention
    qflash.calibrate(model, calibration_batches)                       # static ranges, kept in state_dict()
    logits = model(images)                                             # no range reductions, no host sync

timm is not needed: any module with timm's ``Attention`` or ``WindowAttention`` layout is patched
(:mod:`qflash.nn.tiny` has small models built that way). CUDA tensors run the fused kernel, CPU
tensors the golden model.
"""
from .calibrate import Calibration, calibrate
from .modules import QAttention, QAttentionBase, QWindowAttention
from .patch import PatchReport, Replaced, patch, replacement

__all__ = ["patch", "replacement", "calibrate", "PatchReport", "Replaced", "Calibration", "QAttention",
           "QWindowAttention", "QAttentionBase"]
