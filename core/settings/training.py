"""How the Trainer trains (`models/trainer.py` reads this): batch, optimizer, schedule, precision,
distribution, augmentation, checkpoints."""
from __future__ import annotations

import dataclasses
from typing import Optional

from core.settings.base import Section, setting

DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass
class AugmentationConfig(Section):
    """Train-time augmentation of the stored crops (models/data.py `augment`), each image on its
    own draw."""
    enabled: bool = setting(True, help="false: no augmentation at all")
    flip: bool = setting(True, help="mirror about half of the images")
    colour: bool = setting(True, help="brightness, contrast and saturation, one draw per image")
    box_jitter: bool = setting(True, help="re-crop from a jittered box (shift and scale)")
    cutout: bool = setting(True, help="blank a random square in about half of the images")


def check_batch_split(batch_size: int, accumulation_steps: int,
                      replicas: Optional[int] = None) -> None:
    """The global batch is split evenly over the replicas, then each replica's share into
    `accumulation_steps` micro-batches (tf.split): batch_size must be a multiple of
    replicas × accumulation_steps. Without `replicas` only the accumulation split is checked."""
    for name, value in (("batch_size", batch_size), ("accumulation_steps", accumulation_steps),
                        ("replicas", replicas)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if replicas is None:
        if batch_size % accumulation_steps:
            raise ValueError(f"batch_size {batch_size} must be a multiple of accumulation_steps "
                             f"{accumulation_steps}: each optimizer step splits the batch into "
                             f"{accumulation_steps} equal micro-batches")
        return
    if batch_size % (replicas * accumulation_steps):
        raise ValueError(
            f"batch_size {batch_size} does not split over {replicas} replicas with "
            f"accumulation_steps {accumulation_steps}: the batch is divided evenly over the "
            f"replicas, then each replica's share into {accumulation_steps} micro-batches, so "
            f"batch_size must be a multiple of {replicas} × {accumulation_steps} = "
            f"{replicas * accumulation_steps}")


@dataclasses.dataclass
class TrainingConfig(Section):
    batch_size: int = setting(64, help="global batch per optimizer step (all replicas together)")
    epochs: int = setting(20, help="training epochs")
    steps_per_epoch: Optional[int] = setting(None, help="null: one pass over the train split")
    optimizer: str = setting("adam", help=f"one of {', '.join(OPTIMIZERS)} (sgd: Nesterov)")
    learning_rate: float = setting(1e-3, help="peak learning rate")
    schedule: str = setting("cosine", help="constant; cosine (decay to 0); step (x0.1 at 50 % and "
                            "75 % of the steps)")
    warmup_epochs: float = setting(0.0, help="linear warm-up from 0 to learning_rate over this "
                                   "many epochs, before any schedule")
    weight_decay: float = setting(0.0, help="decoupled weight decay (adamw, sgd)")
    momentum: float = setting(0.9, help="sgd: Nesterov momentum")
    mixed_precision: bool = setting(False, help="mixed_float16 compute; heads, logits and losses "
                                    "stay float32")
    accumulation_steps: int = setting(1, help="micro-batches per optimizer step (gradients "
                                      "averaged); batch_size must split into them")
    distribution: str = setting("auto", help="auto (TF_CONFIG workers -> multi_worker, several "
                                "GPUs -> mirrored, else one_device), one_device, mirrored, "
                                "multi_worker")
    augmentation: AugmentationConfig = setting(help="train-time augmentation",
                                               factory=AugmentationConfig)
    recall_every_epochs: int = setting(1, help="eval-split Recall@1 (unseen identities) every this "
                                       "many epochs, to TensorBoard")
    checkpoint_every_steps: int = setting(50, help="a backup to resume a killed Trainer from")
    resume_root: Optional[str] = setting(None, help="where backups go; null: <pipeline "
                                         "root>/Trainer/resume")
    seed: int = setting(0, help="shuffling, augmentation and initialisation seed")

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs = {self.epochs}], got "
                             f"{self.warmup_epochs!r}")
        if isinstance(self.augmentation, dict):     # a dict given in code, not through from_dict
            self.augmentation = AugmentationConfig.from_dict(self.augmentation, "augmentation")
        check_batch_split(self.batch_size, self.accumulation_steps)
