"""Multi-node training on Vertex AI: the Trainer becomes TFX's Vertex Trainer extension, whose job
has a chief and N-1 workers on the pipeline's image, and in every replica the TF_CONFIG Vertex sets
makes the Trainer's `auto` distribution choose MultiWorkerMirroredStrategy."""
import json

import pytest

from models import trainer as trainer_module
from pipeline import configs
from pipeline import pipeline as pipeline_module

IMAGE = "europe-docker.pkg.dev/acme/ffem/ffem-tfx:1"


def vertex_config(workers=3, gpus=2):
    return configs.PipelineConfig(
        metadata_path=None, last_stage="train",
        vertex_training=configs.VertexTraining(
            project="acme", region="europe-west4", image=IMAGE, workers=workers,
            accelerator_type="NVIDIA_TESLA_T4" if gpus else None, accelerator_count=gpus,
            service_account="trainer@acme.iam.gserviceaccount.com"))


def trainer_of(config):
    return {c.id: c for c in pipeline_module.create_components(config)}["Trainer"]


def launched_job(monkeypatch, trainer):
    """The CustomJob TFX's Vertex Trainer executor would submit (its own code builds it; only the
    API client and the submission are replaced)."""
    from tfx.extensions.google_cloud_ai_platform import runner, training_clients
    from tfx.types import standard_artifacts

    launched = {}
    monkeypatch.setattr(training_clients.VertexJobClient, "create_client", lambda self: None)
    monkeypatch.setattr(runner, "_launch_cloud_training",
                        lambda **kwargs: launched.update(kwargs))
    examples, graph = standard_artifacts.Examples(), standard_artifacts.TransformGraph()
    examples.uri, graph.uri = "gs://acme/root/Transform/transformed_examples/5", "gs://acme/tg/5"
    examples.split_names = json.dumps(["train", "eval"])
    model, run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri, run.uri = "gs://acme/root/Trainer/model/6", "gs://acme/root/Trainer/model_run/6"
    executor = trainer.executor_spec.executor_class()
    properties = {key: value for key, value in trainer.exec_properties.items()
                  if value is not None}
    executor.Do({"examples": [examples], "transform_graph": [graph]},
                {"model": [model], "model_run": [run]}, properties)
    return launched


def test_the_trainer_is_a_vertex_job_with_a_chief_and_workers_on_the_pipeline_image(monkeypatch):
    trainer = trainer_of(vertex_config(workers=3, gpus=2))
    launched = launched_job(monkeypatch, trainer)
    assert launched["project"] == "acme" and launched["enable_vertex"] is True
    assert launched["vertex_region"] == "europe-west4"
    spec = launched["training_job"]["job_spec"]
    assert spec["service_account"] == "trainer@acme.iam.gserviceaccount.com"
    chief, workers = spec["worker_pool_specs"]
    assert (chief["replica_count"], workers["replica_count"]) == (1, 2)
    for pool in (chief, workers):
        assert pool["container_spec"]["image_uri"] == IMAGE
        assert pool["machine_spec"] == {"machine_type": "n1-standard-8",
                                        "accelerator_type": "NVIDIA_TESLA_T4",
                                        "accelerator_count": 2}
        command = " ".join(pool["container_spec"]["command"])
        assert "tfx.scripts.run_executor" in command
        assert "models.trainer.run_fn" in command       # every replica runs the project's run_fn


def test_one_node_has_no_worker_pool_and_no_gpus_means_no_accelerator(monkeypatch):
    launched = launched_job(monkeypatch, trainer_of(vertex_config(workers=1, gpus=0)))
    [chief] = launched["training_job"]["job_spec"]["worker_pool_specs"]
    assert chief["replica_count"] == 1 and chief["machine_spec"] == {"machine_type": "n1-standard-8"}


def test_run_fn_accepts_the_extension_settings_and_still_refuses_unknown_ones():
    custom_config = json.loads(trainer_of(vertex_config()).exec_properties["custom_config"])
    trainer_module.check_training_settings(custom_config)             # no error
    with pytest.raises(ValueError, match="epohcs"):
        trainer_module.check_training_settings({**custom_config, "epohcs": 3})


@pytest.mark.parametrize("task", [{"type": "chief", "index": 0}, {"type": "worker", "index": 0},
                                  {"type": "worker", "index": 1}])
def test_vertex_tf_config_selects_multi_worker_and_one_chief(monkeypatch, task):
    """TF_CONFIG as Vertex AI sets it for a chief + 2 workers pool."""
    cluster = {"chief": ["cmle-training-workerpool0-0:2222"],
               "worker": ["cmle-training-workerpool1-0:2222", "cmle-training-workerpool1-1:2222"]}
    tf_config = json.dumps({"cluster": cluster, "task": task, "job": {}})
    assert trainer_module.resolve_distribution("auto", tf_config, gpus=2) == "multi_worker"
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert trainer_module._is_chief() is (task["type"] == "chief")


def test_bad_vertex_settings_are_refused():
    with pytest.raises(ValueError, match="workers"):
        configs.VertexTraining(project="p", region="r", image=IMAGE, workers=0)
    with pytest.raises(ValueError, match="accelerator_type"):
        configs.VertexTraining(project="p", region="r", image=IMAGE, accelerator_count=1)
