"""What runs on Kubeflow / Vertex must work there: the custom executors through TFX's KFP v2 container
entrypoint, with Vertex-shaped inputs, checked against the compiled spec's own resolver queries."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from core import features, json_safe
from tests import kfp_harness

GROUPS = ("a", "b")
IDENTITIES_PER_GROUP = 12
IMAGES_PER_IDENTITY = 3
EMBEDDING_SIZE = 64


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    # The stand-in models make no error at all on a few identities per group, so the production
    # gate's max_fnmr_ratio (judged on an interval whose upper end is then unbounded) would refuse
    # the informative one: these tests are about naming and resolution, not that rule.
    return kfp_harness.compile_spec(tmp_path_factory.mktemp("spec"), "--tflite-levels", "0",
                                    "--gate", "max_fnmr_ratio=null")


@pytest.fixture(scope="module")
def eval_examples(tmp_path_factory):
    """Raw eval Examples as FaceExampleGen writes them (gzip TFRecords under Split-eval)."""
    root = tmp_path_factory.mktemp("examples")
    split = root / "Split-eval"
    split.mkdir()
    label = 0
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for group in GROUPS:
            for _ in range(IDENTITIES_PER_GROUP):
                for image in range(IMAGES_PER_IDENTITY):
                    example = tf.train.Example()
                    feature = example.features.feature
                    feature[features.LABEL].int64_list.value.append(label)
                    feature[features.GROUP].bytes_list.value.append(group.encode())
                    feature[features.PATH].bytes_list.value.append(
                        f"{group}/{label}/{image}.jpg".encode())
                    writer.write(example.SerializeToString())
                label += 1
    return str(root)


class LabelModel(tf.Module):
    """A stand-in SavedModel with the project's `serving_default` contract (serialized Examples in,
    L2-normalized `embedding` out). `informative`: the embedding is the label's one-hot (every query's
    nearest neighbour is its own identity); otherwise a per-image random vector."""

    def __init__(self, informative: bool):
        super().__init__()
        self.informative = informative

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {
            features.LABEL: tf.io.FixedLenFeature([1], tf.int64),
            features.PATH: tf.io.FixedLenFeature([1], tf.string)})
        if self.informative:
            vectors = tf.one_hot(parsed[features.LABEL][:, 0] % EMBEDDING_SIZE, EMBEDDING_SIZE)
        else:
            seeds = tf.strings.to_hash_bucket_fast(parsed[features.PATH][:, 0], 1 << 30)
            vectors = tf.map_fn(
                lambda s: tf.random.stateless_normal([EMBEDDING_SIZE], tf.stack([s, s])), seeds,
                fn_output_signature=tf.float32)
        return {"embedding": tf.math.l2_normalize(vectors, axis=1)}


def save_model(directory: str, informative: bool) -> str:
    module = LabelModel(informative)
    tf.saved_model.save(module, os.path.join(directory, "Format-Serving"),
                        signatures={"serving_default": module.serve})
    return directory


class Vertex:
    """One simulated Vertex project: the store, the compiled spec, a work directory."""

    def __init__(self, spec, store, root):
        self.spec, self.store, self.root, self.runs = spec, store, root, 0

    def model(self, informative: bool):
        self.runs += 1
        uri = save_model(os.path.join(self.root, f"model-{self.runs}"), informative)
        return self.store.add({"name": self.store.new_name(), "uri": uri,
                               "type": {"schemaTitle": "tfx.Model"}})

    def latest_blessed(self):
        """The compiled resolver, step by step: the newest blessed blessing, then the model whose
        resource name its `current_model_id` names."""
        blessing = self.store.query(kfp_harness.resolver_filter(self.spec, "model_blessing"))
        if blessing is None:
            return None
        return self.store.query(kfp_harness.resolver_filter(self.spec, "model"),
                                inputs={"input": blessing})

    def evaluate(self, examples, model, baseline):
        inputs = {"examples": examples, "model": model}
        if baseline is not None:
            inputs["baseline_model"] = baseline
        work = os.path.join(self.root, f"evaluate-{self.runs}")
        return kfp_harness.run_component(
            self.spec, "RecallEvaluator", self.store, work, inputs,
            {"evaluation": os.path.join(work, "evaluation"),
             "blessing": os.path.join(work, "blessing")})

    def push(self, model, blessing):
        work = os.path.join(self.root, f"push-{self.runs}-{len(self.store.artifacts)}")
        destination = {"filesystem": {"base_directory": os.path.join(self.root, "serving")}}
        return kfp_harness.run_component(
            self.spec, "Pusher", self.store, work, {"model": model, "model_blessing": blessing},
            {"pushed_model": os.path.join(work, "pushed_model")},
            parameters={"push_destination": {"stringValue": json.dumps(destination)}})["pushed_model"]


@pytest.fixture
def vertex(spec, tmp_path, eval_examples):
    store = kfp_harness.VertexStore()
    env = Vertex(spec, store, str(tmp_path))
    env.examples = store.add({"name": store.new_name(), "uri": eval_examples,
                              "type": {"schemaTitle": "tfx.Examples"},
                              "metadata": {"split_names": json.dumps(["eval"])}})
    return env


@pytest.mark.pipeline
def test_blessing_names_the_model_so_the_compiled_resolver_and_the_pusher_find_it(vertex):
    model = vertex.model(informative=True)
    outputs = vertex.evaluate(vertex.examples, model, baseline=None)
    blessing = outputs["blessing"]
    assert blessing["metadata"]["blessed"] == 1
    assert blessing["metadata"]["current_model_id"] == model["name"]
    assert os.path.exists(os.path.join(blessing["uri"], "BLESSED"))
    # The compiled latest-blessed query resolves exactly the candidate.
    assert vertex.latest_blessed()["name"] == model["name"]
    # TFMA's own readers load the evaluation: one slice per group, validation equal to the blessing.
    import tensorflow_model_analysis as tfma

    evaluation = outputs["evaluation"]["uri"]
    assert tfma.load_validation_result(evaluation).validation_ok is True
    slices = {tuple(key): values[""][""] for key, values in
              tfma.load_eval_result(evaluation).slicing_metrics}
    assert set(slices) == {(), (("group", "a"),), (("group", "b"),)}
    with open(os.path.join(evaluation, "metrics.json")) as f:
        recall = json_safe.load(f)["candidate"]
    for key, values in slices.items():
        scope = key[0][1] if key else "overall"
        assert values["recall_at_1"]["boundedValue"]["value"] == recall[scope]["recall@1"]
    # What the KFP UI shows: the report as a system.HTML page (the file at its URI) and Recall@1
    # per group as system.Metrics.
    page, numbers = outputs["report"], outputs["recall_metrics"]
    assert kfp_harness.schema_title(page["type"]) == "system.HTML"
    with open(page["uri"]) as f:
        assert f.read().lstrip().lower().startswith("<!doctype html")
    assert kfp_harness.schema_title(numbers["type"]) == "system.Metrics"
    for scope in ("overall", "a", "b"):
        assert numbers["metadata"][f"recall@1/{scope}"] == recall[scope]["recall@1"]
    assert numbers["metadata"]["blessed"] == 1
    card = outputs["model_card"]
    assert kfp_harness.schema_title(card["type"]) == "system.HTML"
    with open(card["uri"]) as f:
        assert "Model card" in f.read()
    pushed = vertex.push(model, blessing)
    assert pushed["metadata"]["pushed"] == 1
    destination = pushed["metadata"]["pushed_destination"]
    assert os.path.exists(os.path.join(destination, "saved_model.pb"))
    # The operating point and the card travel with the pushed model.
    with open(os.path.join(destination, "assets", "operating_point.json")) as f:
        point = json_safe.load(f)
    with open(os.path.join(evaluation, "metrics.json")) as f:
        assert point["threshold"] == json_safe.load(f)["verification"]["threshold"]
    assert os.path.exists(os.path.join(destination, "model_card.json"))


@pytest.mark.pipeline
def test_pusher_refuses_an_unblessed_model_and_a_blessing_issued_for_another_model(vertex):
    good = vertex.model(informative=True)
    bad = vertex.model(informative=False)
    unblessed = vertex.evaluate(vertex.examples, bad, baseline=None)["blessing"]
    assert unblessed["metadata"]["blessed"] == 0
    assert os.path.exists(os.path.join(unblessed["uri"], "NOT_BLESSED"))
    assert vertex.push(bad, unblessed)["metadata"]["pushed"] == 0
    blessed_for_good = vertex.evaluate(vertex.examples, good, baseline=None)["blessing"]
    assert vertex.push(bad, blessed_for_good)["metadata"]["pushed"] == 0     # names another model
    assert not os.path.exists(os.path.join(vertex.root, "serving")) or \
        not os.listdir(os.path.join(vertex.root, "serving"))


@pytest.mark.pipeline
def test_replayed_runs_always_resolve_the_last_blessed_model_as_baseline(vertex):
    """Runs: blessed, not blessed, blessed. Before each run the compiled resolver gives the baseline;
    it is always the last blessed model, and the evaluator records it by resource name."""
    expected_baseline = None
    for run, informative in enumerate([True, False, True]):
        baseline = vertex.latest_blessed()
        assert (baseline and baseline["name"]) == expected_baseline, run
        model = vertex.model(informative)
        blessing = vertex.evaluate(vertex.examples, model, baseline)["blessing"]
        assert blessing["metadata"]["blessed"] == int(informative), run
        if baseline is not None:
            assert blessing["metadata"]["baseline_model_id"] == baseline["name"]
        if informative:
            expected_baseline = model["name"]
    assert vertex.latest_blessed()["name"] == expected_baseline


def test_the_resolver_filter_reader_matches_names_not_numbers():
    """The harness itself: an integer id in the blessing (what a non-Evaluator executor leaves on
    Vertex) does not match any resource name, so the defect would show."""
    store = kfp_harness.VertexStore()
    model = store.add({"name": store.new_name(), "uri": "/m", "type": {"schemaTitle": "tfx.Model"}})
    query = ('schema_title="tfx.Model" AND state=LIVE AND '
             'name="{{$.inputs.artifacts[\'input\'].metadata[\'current_model_id\']}}"')
    assert store.query(query, {"input": {"metadata": {"current_model_id": model["name"]}}}) == model
    assert store.query(query, {"input": {"metadata": {"current_model_id": 1001.0}}}) is None
    np.testing.assert_equal(store.query('schema_title="tfx.Model" AND state=LIVE'), model)


CROP_SIDE = 16


class CropModel(tf.Module):
    """A stand-in pushed model with `embed_transformed` (crops in, L2-normalized embedding out), the
    signature the TFLite step converts: a fixed random projection of 4x4-average-pooled crops."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.projection = tf.Variable(rng.normal(size=[(CROP_SIDE // 4) ** 2 * 3, 32]),
                                      dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, CROP_SIDE, CROP_SIDE, 3], tf.float32,
                                                name="image")])
    def embed_transformed(self, image):
        pooled = tf.nn.avg_pool2d(image, 4, 4, "VALID")
        flat = tf.reshape(pooled, [-1, (CROP_SIDE // 4) ** 2 * 3])
        return {"embedding": tf.math.l2_normalize(tf.matmul(flat, self.projection), axis=1)}


@pytest.fixture(scope="module")
def transformed_examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformed")
    (root / "Split-eval").mkdir()
    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(str(root / "Split-eval" / "data.gz"), options="GZIP") as writer:
        for i in range(40):
            example = tf.train.Example()
            example.features.feature[features.IMAGE].bytes_list.value.append(   # uint8 crop
                rng.integers(0, 256, size=CROP_SIDE * CROP_SIDE * 3, dtype=np.uint8).tobytes())
            example.features.feature[features.LABEL].int64_list.value.append(i // 2)
            writer.write(example.SerializeToString())
    return str(root)


@pytest.mark.pipeline
@pytest.mark.parametrize("pushed", [1, 0])
def test_tflite_step_reads_its_custom_artifact_type_and_exports_only_what_was_pushed(
        vertex, transformed_examples, pushed):
    from core import operating_point
    from tests.test_guarded_pusher import point_for

    destination = os.path.join(vertex.root, "serving", "1")
    module = CropModel()
    tf.saved_model.save(module, destination,
                        signatures={"embed_transformed": module.embed_transformed})
    # As the Pusher leaves a version: its operating point, which the TFLite step must carry.
    point = point_for(destination)
    os.makedirs(os.path.join(destination, "assets"), exist_ok=True)
    with open(os.path.join(destination, operating_point.ASSET), "w") as f:
        f.write(operating_point.dumps(point))
    store = vertex.store
    pushed_model = store.add({"name": store.new_name(), "uri": os.path.join(vertex.root, "push"),
                              "type": {"schemaTitle": "tfx.PushedModel"},
                              "metadata": {"pushed": pushed, "pushed_destination": destination}})
    examples = store.add({"name": store.new_name(), "uri": transformed_examples,
                          "type": {"schemaTitle": "tfx.Examples"},
                          "metadata": {"split_names": json.dumps(["eval"])}})
    work = os.path.join(vertex.root, "tflite")
    outputs = kfp_harness.run_component(
        vertex.spec, "TFLiteExporter", store, work,
        {"pushed_model": pushed_model, "transformed_examples": examples},
        {"tflite_model": os.path.join(work, "tflite_model")})
    tflite = outputs["tflite_model"]
    assert kfp_harness.schema_title(tflite["type"]) == "components.TFLiteModel"
    assert tflite["metadata"]["exported"] == pushed
    files = os.listdir(tflite["uri"]) if os.path.isdir(tflite["uri"]) else []
    assert ("model_q0.tflite" in files) == bool(pushed)
    if pushed:
        assert tflite["metadata"]["source_model"] == destination
        assert json.loads(tflite["metadata"]["cosine_mean"])["0"] > 0.99
        with open(os.path.join(tflite["uri"], "tflite_report.json")) as f:
            assert json.load(f)["levels"]["0"]["threshold"] == point["threshold"]


@pytest.mark.pipeline
def test_face_example_gen_runs_after_tfx_driver_and_writes_splits_and_quarantine(
        spec, small_sample, tmp_path):
    """FaceExampleGen as Vertex runs it: TFX's file-based ExampleGen driver (the pre-cache check)
    computes span, version and fingerprint, then the executor ingests; one record is bad."""
    data = tmp_path / "data"
    import shutil
    shutil.copytree(small_sample, data)
    with open(data / "test.json") as f:
        records = json.load(f)
    bad_key = sorted(records)[0]
    records[bad_key]["x2"] = records[bad_key]["x1"]            # an empty box: quarantined
    with open(data / "test.json", "w") as f:
        json.dump(records, f)
    store = kfp_harness.VertexStore()
    parameters = {"input_base": {"stringValue": str(data)},
                  "image_root": {"stringValue": str(data / "images")},
                  "max_bad_fraction": {"doubleValue": 0.5}}
    outputs = kfp_harness.run_component(spec, "FaceExampleGen", store, str(tmp_path / "work"), {},
                                        {"examples": str(tmp_path / "examples")}, parameters)
    examples = outputs["examples"]
    assert json.loads(examples["metadata"]["split_names"]) == ["train", "eval"]
    summary = json.loads(examples["metadata"]["ingest_summary"])
    with open(data / "train.json") as f:
        train = json.load(f)
    assert summary["train"]["valid"] == len(train) and summary["train"]["quarantined"] == 0
    assert summary["eval"]["valid"] == len(records) - 1 and summary["eval"]["quarantined"] == 1
    for split in ("train", "eval"):
        assert tf.io.gfile.glob(os.path.join(examples["uri"], f"Split-{split}", "*.gz"))
    quarantine = os.path.join(examples["uri"], "ingest", "eval.quarantine.jsonl")
    with open(quarantine) as f:
        [line] = [json.loads(row) for row in f]
    assert line["key"] == bad_key and line["reason"] == "bad_box"
