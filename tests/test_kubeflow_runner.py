"""kubeflow_runner compiles the pipeline spec offline: components, image, Beam args, Trainer GPU."""
import json

import kubeflow_runner


def test_compiles_spec_with_image_beam_args_and_trainer_gpu(tmp_path):
    output = tmp_path / "spec.json"
    kubeflow_runner.run([
        "--image", "gcr.io/acme/ffem-tfx:1.2", "--pipeline-root", "gs://acme/ffem/root",
        "--data-root", "gs://acme/faces", "--serving-dir", "gs://acme/ffem/serving",
        "--trainer-gpus", "2", "--gpu-type", "NVIDIA_L4", "--output", str(output),
        "--tflite-levels", "0", "2",
        "--beam-args", "--runner=DataflowRunner", "--project=acme", "--region=europe-west4"])
    spec = json.loads(output.read_text())
    pipeline = spec["pipelineSpec"]
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme/ffem/root"
    tasks = pipeline["root"]["dag"]["tasks"]
    for node in ("FaceExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                 "Transform", "Trainer", "RecallEvaluator", "Pusher", "TFLiteExporter"):
        assert node in tasks, node
    assert "[0, 2]" in json.dumps(tasks["TFLiteExporter"])
    assert any(name.startswith("latest_blessed_model_resolver") for name in tasks)
    executors = pipeline["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    for name in ("FaceExampleGen", "Transform", "Trainer", "RecallEvaluator", "Pusher"):
        container = containers[f"{name}_executor"]
        assert container["image"] == "gcr.io/acme/ffem-tfx:1.2"
        assert "--runner=DataflowRunner" in container["args"]
        assert "--region=europe-west4" in container["args"]
    trainer = containers["Trainer_executor"]["resources"]
    assert trainer["accelerator"] == {"type": "NVIDIA_L4", "count": "2"}
    assert "accelerator" not in containers["Transform_executor"].get("resources", {})
    # Our components, by their executor classes, and KFP cannot see image changes: no ingest cache.
    assert "components.recall_evaluator.component.Executor" in \
        containers["RecallEvaluator_executor"]["args"]
    assert tasks["FaceExampleGen"]["cachingOptions"]["enableCache"] is False
    params = json.dumps(tasks)
    assert "gs://acme/faces/images" in params and "/pipeline/schema/schema.pbtxt" in params
