"""The embedding network and its training head (`models/face_model.py` builds them from this).

    SoftmaxCenter     L2-softmax (α = 30) + center loss (weight 1e-3), Wen et al.'s center update
    ArcFace           s = 60, m = 0.5 ("AngularMargin", the original's name, is accepted too)
    GroupAware        GroupFace (4 groups, intermediate 256, group loss weight 0.1) + ArcFace
    CosFace           s = 60, m = 0.35
    SubCenterArcFace  ArcFace over K = 3 sub-centers per class

`sample_rate` < 1 turns on Partial FC (models/partial_fc.py) for every cosine head.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from core.settings.base import Section, setting

LOSS_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "SoftmaxCenter": {"scale": 30.0, "center_weight": 1e-3},
    "ArcFace": {"scale": 60.0, "margin": 0.5},
    "GroupAware": {"scale": 60.0, "margin": 0.5},
    "CosFace": {"scale": 60.0, "margin": 0.35},
    "SubCenterArcFace": {"scale": 60.0, "margin": 0.5, "subcenters": 3},
}
LOSSES = tuple(LOSS_DEFAULTS)
# Older names still accepted, mapped to the loss's name in LOSSES.
LOSS_ALIASES: Dict[str, str] = {"AngularMargin": "ArcFace"}
POOLINGS = ("gnap", "average")


@dataclasses.dataclass
class ModelConfig(Section):
    loss: str = setting("ArcFace", help=f"training loss: {', '.join(LOSSES)}")
    backbone: str = setting("resnet50v2", help="the network before the embedding head: a "
                            "tf.keras.applications name (resnet50v2, efficientnetb0, ...), "
                            "small_cnn, or face_recognition_net (face-api's pretrained network, "
                            "which needs the face_api_aligned crop)")
    backbone_weights: Optional[str] = setting(None, help="None, \"imagenet\" or a local no-top "
                                              "weights file")
    image_size: int = setting(112, help="input side in pixels; in the pipeline the Transform's "
                              "crop size (the top-level image_size) sets it", documented=False)
    embedding_size: int = setting(512, help="embedding dimension")
    pooling: str = setting("gnap", help="gnap (global norm-aware pooling) or average")
    scale: Optional[float] = setting(None, help="logit scale s; null: the loss's default")
    margin: Optional[float] = setting(None, help="angular or cosine margin m; null: the loss's "
                                      "default")
    subcenters: Optional[int] = setting(None, help="SubCenterArcFace: centers per class; null: 3")
    center_weight: Optional[float] = setting(None, help="SoftmaxCenter: center-loss weight; "
                                             "null: 1e-3")
    center_alpha: float = setting(0.5, help="SoftmaxCenter: Wen et al.'s center learning rate α")
    num_groups: int = setting(4, help="GroupAware: GroupFace's number of groups")
    group_intermediate: int = setting(256, help="GroupAware: width of GroupFace's group layers")
    group_weight: float = setting(0.1, help="GroupAware: weight of the group loss")
    sample_rate: float = setting(1.0, help="Partial FC: the fraction of identities each step "
                                 "samples (the batch's own plus uniform negatives); 1 is the full "
                                 "softmax. Needs a cosine head (not SoftmaxCenter)")

    def __post_init__(self):
        self.loss = LOSS_ALIASES.get(self.loss, self.loss)
        if self.loss not in LOSS_DEFAULTS:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'gnap' or 'average', got {self.pooling!r}")
        if (isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, (int, float))
                or not 0.0 < self.sample_rate <= 1.0):
            raise ValueError(f"sample_rate must be a number in (0, 1] (the fraction of identities "
                             f"each step samples; 1 = full softmax), got {self.sample_rate!r}")
        if self.sample_rate < 1.0 and self.loss == "SoftmaxCenter":
            raise ValueError("sample_rate < 1 (Partial FC) needs a cosine head (ArcFace, GroupAware, "
                             "CosFace or SubCenterArcFace); SoftmaxCenter's L2-softmax has a bias "
                             "and center loss over every class")

    def loss_value(self, name: str):
        """A loss hyper-parameter (scale, margin, subcenters, center_weight): the setting, or the
        loss's default when it is null. Kept null in the settings, so that changing the loss in
        a later layer (a flag over a preset) takes the new loss's default."""
        value = getattr(self, name)
        return LOSS_DEFAULTS[self.loss].get(name) if value is None else value
