import os

# Before anything imports TensorFlow: TFT's feature layer and the Trainer export need Keras 2.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
LONDON_FACES = os.path.join(TESTS_DIR, "data", "london_faces")


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """A few dozen generated images: 12 train identities x 3, 8 unseen identities x 4."""
    from pipeline import sample_data

    out = str(tmp_path_factory.mktemp("sample"))
    sample_data.generate(out, seed=1, train_identities=12, train_images=3, test_identities=8,
                              test_images=4, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def transformed_sample(small_sample, tmp_path_factory):
    """The small sample through ingest and Transform (32x32 crops): the artifacts' URIs."""
    from tfx import v1 as tfx

    from pipeline import configs
    from pipeline.pipeline import create_pipeline
    from tests.pipeline_helpers import node_executions, open_store, output_artifacts

    work = tmp_path_factory.mktemp("transformed")
    config = configs.PipelineConfig(
        pipeline_root=str(work / "root"), metadata_path=str(work / "m.sqlite"),
        ingest=configs.IngestConfig(data_root=small_sample,
                                    image_root=os.path.join(small_sample, "images")),
        beam_pipeline_args=[], last_stage="transform", image_size=32)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    store = open_store(config.metadata_path)
    [transform] = node_executions(store, "Transform")
    [example_gen] = node_executions(store, "FaceExampleGen")
    return {
        "examples": output_artifacts(store, example_gen.id, "examples")[0].uri,
        "transformed_examples": output_artifacts(store, transform.id, "transformed_examples")[0].uri,
        "transform_graph": output_artifacts(store, transform.id, "transform_graph")[0].uri,
        "data": small_sample,
    }
