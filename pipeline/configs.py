"""Every setting of the pipeline: one typed tree, rooted here, read by the runners, components and
models, and checked once when it is built (core/settings/base.py says how; docs/configuration.md
lists every setting and is generated from these classes).

    PipelineConfig                    this module: where things are, stages, Beam, Kubeflow
      ingest:   IngestConfig          core/settings/ingest.py: FaceExampleGen's lists, images, limits
      model:    ModelConfig           core/settings/model.py: network, loss, Partial FC (sample_rate)
      training: TrainingConfig        core/settings/training.py: optimizer, schedule, epochs, ...
        augmentation: AugmentationConfig
      gate:     GateConfig            core/settings/gate.py: the release gate's bars and intervals

Experiments are JSON files of the same tree (configs/*.json; `--preset NAME` reads
configs/NAME.json over the defaults below, `--config FILE` a file of one's own over that);
pipeline/overrides.py lays them and the command-line flags over each other.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional

import schema as schema_package
from core.settings.base import Section, refuse_unknown, setting
from core.settings.gate import GateConfig
from core.settings.ingest import SAMPLE_DATA_DIR, IngestConfig
from core.settings.model import ModelConfig
from core.settings.training import AugmentationConfig, TrainingConfig

__all__ = ["AugmentationConfig", "GateConfig", "IngestConfig", "ModelConfig", "PipelineConfig",
           "SAMPLE_DATA_DIR", "TrainingConfig", "VertexTraining", "preset", "trainer_settings"]

PIPELINE_NAME = "ffem-tfx"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "runs")
PRESETS_DIR = os.path.join(REPO_ROOT, "configs")
# The project's setup.py, staged for Beam workers outside this process when no image is named
# (pipeline.beam_options.worker_code_args).
SETUP_FILE = os.path.join(REPO_ROOT, "setup.py")
# The pipeline's stages in order; `PipelineConfig.last_stage` builds the pipeline up to one of them.
STAGES = ("ingest", "transform", "train", "evaluate", "push")
CROPS = ("box", "face_api_aligned")


@dataclasses.dataclass
class VertexTraining(Section):
    """The Trainer as a Vertex AI custom job on several nodes (TFX's Vertex Trainer extension): a
    chief and `workers - 1` workers, each `machine_type` with `accelerator_count` GPUs, all running
    `image`. Vertex sets TF_CONFIG in every replica, so the Trainer's `auto` distribution picks
    MultiWorkerMirroredStrategy. Built by kubeflow_runner.py from its flags."""
    project: str = setting(help="Google Cloud project")
    region: str = setting(help="Vertex AI region")
    image: str = setting(help="the pipeline's container image")
    workers: int = setting(2, help="replicas: a chief and workers - 1 workers")
    machine_type: str = setting("n1-standard-8", help="machine of every replica")
    accelerator_type: Optional[str] = setting(None, help="e.g. NVIDIA_TESLA_T4")
    accelerator_count: int = setting(0, help="GPUs per replica")
    service_account: Optional[str] = setting(None, help="the job's service account")

    def __post_init__(self):
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.accelerator_count and not self.accelerator_type:
            raise ValueError("accelerator_count needs accelerator_type (e.g. NVIDIA_TESLA_T4)")

    def worker_pool_specs(self) -> List[Dict[str, Any]]:
        machine: Dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_count:
            machine.update(accelerator_type=self.accelerator_type,
                           accelerator_count=int(self.accelerator_count))
        pool = {"machine_spec": machine, "container_spec": {"image_uri": self.image}}
        specs = [{**pool, "replica_count": 1}]                     # the chief
        if self.workers > 1:
            specs.append({**pool, "replica_count": int(self.workers) - 1})
        return specs


# Settings that are not a person's to set in a file: the Kubeflow runner builds them from its flags.
NOT_FROM_FILE = ("resources", "vertex_training", "beam_worker_image")
_SECTIONS = ("ingest", "model", "training", "gate")


@dataclasses.dataclass
class PipelineConfig(Section):
    description: str = setting("", help="free text: what the experiment is for")
    pipeline_name: str = setting(PIPELINE_NAME, help="the pipeline's name in the metadata")
    pipeline_root: str = setting(os.path.join(DEFAULT_WORK_DIR, "pipeline_root"),
                                 help="where the artifacts go")
    metadata_path: Optional[str] = setting(os.path.join(DEFAULT_WORK_DIR, "metadata.sqlite"),
                                           help="SQLite metadata file (null on Kubeflow)")
    ingest: IngestConfig = setting(help="FaceExampleGen", factory=IngestConfig)
    schema_path: str = setting(schema_package.SCHEMA_FILE, help="the curated schema")
    image_size: int = setting(112, help="the Transform's crop side in pixels, the model's input")
    crop: Optional[str] = setting(None, help="the Transform's crop recipe: box or "
                                  "face_api_aligned (models/pretrained/alignment.py); null: the "
                                  "one the backbone needs")
    model: ModelConfig = setting(help="the network and its loss", factory=ModelConfig)
    training: TrainingConfig = setting(help="how the Trainer trains", factory=TrainingConfig)
    warm_start: Optional[str] = setting(None, help="null; latest_blessed (the last blessed model "
                                        "of this pipeline); or the URI of a model directory "
                                        "trained by this pipeline")
    gate: GateConfig = setting(help="the RecallEvaluator's release gate", factory=GateConfig)
    resources: Dict[str, Any] = setting(help="Kubeflow: container resources per node id",
                                        factory=dict, documented=False)
    vertex_training: Optional[VertexTraining] = setting(
        None, help="Vertex AI: the Trainer as a multi-node custom job", documented=False)
    serving_model_dir: str = setting(os.path.join(DEFAULT_WORK_DIR, "serving_model"),
                                     help="where the Pusher puts blessed models (versioned)")
    tflite_levels: List[int] = setting(help="after the Pusher: TFLite at these quantization "
                                       "levels (0 dynamic range, 1 full integer with float "
                                       "fallback, 2 integer only), each checked against the "
                                       "SavedModel; empty: no TFLite step", factory=list)
    evaluate_model: Optional[str] = setting(None, help="evaluate this model instead of training "
                                            "one (a SavedModel with the serving signatures, a "
                                            "Model artifact directory, or pretrained:NAME)")
    enable_cache: bool = setting(True, help="reuse the results of unchanged components")
    last_stage: str = setting(STAGES[-1], help=f"build the pipeline up to: {', '.join(STAGES)}")
    beam_pipeline_args: List[str] = setting(
        help="Beam options of ExampleGen, StatisticsGen and Transform; without --runner, "
             "FnApiRunner", factory=lambda: ["--direct_running_mode=multi_processing",
                                             "--direct_num_workers=2"])
    beam_worker_image: Optional[str] = setting(None, help="SDK container of remote Beam workers",
                                               documented=False)

    def __post_init__(self):
        # Sections given as dicts in code (tests, notebooks) are checked like a file's.
        for name, cls in (("ingest", IngestConfig), ("model", ModelConfig),
                          ("training", TrainingConfig), ("gate", GateConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name), name, _elsewhere()))
        if self.last_stage not in STAGES:
            raise ValueError(f"last_stage must be one of {', '.join(STAGES)}, got "
                             f"{self.last_stage!r}")
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)} or null, got {self.crop!r}")

    @classmethod
    def check_keys(cls, values: Mapping[str, Any], where: str,
                   elsewhere: Optional[Mapping[str, str]] = None) -> None:
        refuse_unknown(values, cls.field_types(), where, _elsewhere())
        model = values.get("model")
        if isinstance(model, Mapping) and "image_size" in model:
            raise ValueError(f"{where}: model.image_size is the Transform's crop size: set the "
                             f"top-level image_size instead")

    def updated(self, overrides: Mapping[str, Any], where: str = "overrides",
                elsewhere: Optional[Mapping[str, str]] = None) -> "PipelineConfig":
        """As Section.updated; a data_root without an image_root also sets image_root to
        <data_root>/images (as --data-root does)."""
        ingest = overrides.get("ingest")
        if isinstance(ingest, Mapping) and "data_root" in ingest and "image_root" not in ingest:
            overrides = {**overrides, "ingest": {
                **ingest, "image_root": os.path.join(str(ingest["data_root"]), "images")}}
        return super().updated(overrides, where, _elsewhere())


def _elsewhere() -> Dict[str, str]:
    """Key -> the section that has it, for the hint of a key put in the wrong section."""
    found: Dict[str, str] = {}
    for name, cls in (("training.augmentation", AugmentationConfig), ("gate", GateConfig),
                      ("ingest", IngestConfig), ("training", TrainingConfig),
                      ("model", ModelConfig)):
        found.update({field.name: name for field in dataclasses.fields(cls)})
    found.update({field.name: "the top level" for field in dataclasses.fields(PipelineConfig)
                  if field.name not in _SECTIONS})
    return found


def preset_path(name: str) -> str:
    return os.path.join(PRESETS_DIR, f"{name}.json")


def presets() -> List[str]:
    return sorted(f[:-len(".json")] for f in os.listdir(PRESETS_DIR) if f.endswith(".json"))


def read_settings_file(path: str, where: Optional[str] = None) -> Dict[str, Any]:
    """A JSON object of settings (an experiment file), its keys checked at every depth."""
    where = where or f"--config {path}"
    try:
        with open(path) as f:
            values = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a JSON object of PipelineConfig settings, got "
                         f"{type(values).__name__}")
    if set(values) & set(NOT_FROM_FILE):
        raise ValueError(f"{where}: {sorted(set(values) & set(NOT_FROM_FILE))} come from the "
                         f"Kubeflow runner's flags, not from a file")
    PipelineConfig().updated(values, where)         # every key and value checked
    return values


def preset(name: str, **changes) -> PipelineConfig:
    """The defaults with configs/NAME.json laid over them (`--preset NAME`), then `changes`."""
    if name not in presets():
        raise ValueError(f"no preset {name!r}; presets: {', '.join(presets())} (configs/)")
    config = PipelineConfig().updated(read_settings_file(preset_path(name), f"configs/{name}.json"),
                                      f"configs/{name}.json")
    return dataclasses.replace(config, **changes) if changes else config


def trainer_settings(config: PipelineConfig) -> Dict[str, Any]:
    """The Trainer's settings (its custom_config without the pipeline's keys): the model and
    training sections, flat, as models/trainer.py `configs_from_settings` splits them; the model's
    input size is the Transform's crop size."""
    model = config.model.to_dict()
    model["image_size"] = config.image_size
    return {**model, **config.training.to_dict()}
