"""TFLite export: every level converts, its embeddings match the SavedModel within the stated bounds
(cosines computed here with NumPy, not read from the report), the CLI enforces the bounds, and the
conversion core and the pipeline component import nothing from the tools above them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from models import preprocessing
from models import tflite as tflite_core
from models.face_model import ModelConfig, build_embedding_model
from pipeline import code_version
from tests.conftest import REPO_ROOT
from tests.test_guarded_pusher import point_for
from tools import export_tflite
from tools.face_lists import read_face_list

IMAGE_SIZE = 32
# The bounds models/tflite.py's docstring states; its table must not drift below them silently.
STATED_BOUNDS = {0: 0.995, 1: 0.98, 2: 0.98}


def crops_of(sample_dir, list_name):
    """Crops straight from crop_faces (not through the tool's loader), in list order."""
    with open(os.path.join(sample_dir, list_name)) as f:
        records = json.load(f)
    image_bytes = []
    for key in records:
        with open(os.path.join(sample_dir, "images", key), "rb") as f:
            image_bytes.append(f.read())
    boxes = [[records[k][c] for c in ("x1", "y1", "x2", "y2")] for k in records]
    return preprocessing.crop_faces(tf.constant(image_bytes), tf.constant(boxes),
                                    IMAGE_SIZE).numpy()


class EmbedTransformedOnly(tf.Module):
    """A SavedModel with just the exported model's `embed_transformed` signature.

    Tracks the Keras model's variables, not the Keras object: saving a Keras model traces every
    layer for its metadata, seconds that this test does not need."""

    def __init__(self, model):
        super().__init__()
        self.model_variables = list(model.variables)
        self.embed_transformed = tf.function(
            lambda image: {"embedding": tf.math.l2_normalize(
                model(image, training=False)["embedding"], axis=-1)},
            input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32,
                                           name="image")])


@pytest.fixture(scope="module")
def tiny(small_sample, tmp_path_factory):
    train, test = crops_of(small_sample, "train.json"), crops_of(small_sample, "test.json")
    tf.keras.utils.set_random_seed(0)
    model = build_embedding_model(ModelConfig(loss="AngularMargin", backbone="small_cnn",
                                              image_size=IMAGE_SIZE, embedding_size=16))
    # Random weights with initial BN statistics (mean 0, variance 1) put every embedding in nearly
    # the same direction, so even mismatched crops would score a high cosine. BN statistics taken
    # from real crops (momentum 0: one pass sets them) centre the embeddings and spread them out.
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(train, training=True)
    path = str(tmp_path_factory.mktemp("tiny_model") / "1")
    module = EmbedTransformedOnly(model)
    tf.saved_model.save(module, path, signatures={"embed_transformed": module.embed_transformed})
    reference = tf.saved_model.load(path).signatures["embed_transformed"](
        image=tf.constant(test))["embedding"].numpy()
    return {"path": path, "train": train, "test": test, "reference": reference,
            "data": small_sample}


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tflite"))
    report = tflite_core.export_tflite(tiny["path"], [0, 1, 2], out,
                                      calibration_crops=tiny["train"], check_crops=tiny["test"])
    return out, report


def numpy_cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def interpreter_for(path):
    interpreter = tf.lite.Interpreter(
        model_path=path, experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    return interpreter


def test_the_stated_bounds_are_the_enforced_ones():
    assert tflite_core.MIN_MEAN_COSINE == STATED_BOUNDS


def test_embeddings_match_the_saved_model_within_each_levels_bound(exported, tiny):
    out, report = exported
    assert sorted(report["levels"]) == ["0", "1", "2"]
    for level, bound in STATED_BOUNDS.items():
        path = os.path.join(out, f"model_q{level}.tflite")
        similarity = numpy_cosines(tflite_core.run_tflite(path, tiny["test"]), tiny["reference"])
        assert similarity.mean() >= bound, (level, similarity.mean())
        entry = report["levels"][str(level)]
        assert entry["cosine_mean"] == pytest.approx(similarity.mean(), abs=1e-5)
        assert entry["cosine_min"] == pytest.approx(similarity.min(), abs=1e-5)
        assert entry["passed"] and entry["min_mean_cosine"] == bound
    assert report["passed"]
    assert report["check_crops"] == len(tiny["test"]) == 32
    assert report["calibration_crops"] == len(tiny["train"]) == 36


def test_the_check_separates_matching_from_mismatched_crops(exported, tiny):
    """Fed the check crops in reverse order, every level falls far below every bound."""
    out, _ = exported
    for level in STATED_BOUNDS:
        mismatched = tflite_core.run_tflite(os.path.join(out, f"model_q{level}.tflite"),
                                            tiny["test"][::-1])
        assert numpy_cosines(mismatched, tiny["reference"]).mean() < 0.5


def test_sizes_and_io_types_per_level(exported, tiny):
    out, report = exported
    variables = os.path.join(tiny["path"], "variables")
    float_bytes = sum(os.path.getsize(os.path.join(variables, n)) for n in os.listdir(variables))
    expected_io = {0: ("float32", "float32"), 1: ("float32", "float32"), 2: ("uint8", "uint8")}
    for level, (input_dtype, output_dtype) in expected_io.items():
        path = os.path.join(out, f"model_q{level}.tflite")
        assert report["levels"][str(level)]["size_bytes"] == os.path.getsize(path)
        assert os.path.getsize(path) < 0.4 * float_bytes           # int8 weights: ~1/4 of float32
        interpreter = interpreter_for(path)
        [inp], [output] = interpreter.get_input_details(), interpreter.get_output_details()
        assert inp["shape"].tolist() == [1, IMAGE_SIZE, IMAGE_SIZE, 3]
        assert (np.dtype(inp["dtype"]).name, np.dtype(output["dtype"]).name) == (
            input_dtype, output_dtype)
    level2 = interpreter_for(os.path.join(out, "model_q2.tflite"))
    assert level2.get_input_details()[0]["quantization"][0] > 0      # a real scale to feed with
    assert level2.get_output_details()[0]["quantization"][0] > 0


def test_convolutions_and_the_fc_compute_in_int8_from_level_1(exported):
    out, report = exported
    for level, activation_dtype in ((0, np.float32), (1, np.int8), (2, np.int8)):
        interpreter = interpreter_for(os.path.join(out, f"model_q{level}.tflite"))
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        heavy = [op for op in interpreter._get_ops_details()
                 if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
        assert len(heavy) == 9                                       # 8 convs + the embedding FC
        for op in heavy:
            activation, weights = tensors[op["inputs"][0]], tensors[op["inputs"][1]]
            assert np.dtype(activation["dtype"]) == activation_dtype, (level, op)
            # Dynamic range leaves weights under 1024 values in float (the first conv: 3x3x3x32).
            if level > 0 or np.prod(weights["shape"]) >= 1024:
                assert np.dtype(weights["dtype"]) == np.int8, (level, op)
    # What stays float in the integer levels is GNAP's norm weighting, and the report says so.
    for level in ("1", "2"):
        assert set(report["levels"][level]["float_ops"]) <= {"DEQUANTIZE", "SQUARE", "SQRT", "MEAN",
                                                             "MAXIMUM", "DIV"}


def test_integer_levels_need_calibration_crops(tiny, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        tflite_core.export_tflite(tiny["path"], [1], str(tmp_path), calibration_crops=None,
                                  check_crops=tiny["test"][:2])


def test_errors_name_the_bad_input(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        tflite_core.load_embed_transformed(missing)

    other = tf.Module()
    other.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(other, str(tmp_path / "other"), signatures={"serving_default": other.f})
    with pytest.raises(KeyError, match="embed_transformed.*serving_default"):
        tflite_core.load_embed_transformed(str(tmp_path / "other"))

    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="empty.json.*empty"):
        read_face_list(str(tmp_path / "empty.json"))


def test_cli_end_to_end(tiny, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tools.export_tflite", "--model", tiny["path"],
         "--list", os.path.join(tiny["data"], "test.json"),
         "--image-root", os.path.join(tiny["data"], "images"), "--levels", "0", "2",
         "--out", str(out), "--calibration-images", "16", "--check-images", "12"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "tflite_report.json").read_text())
    assert sorted(report["levels"]) == ["0", "2"] and report["passed"]
    # 32 test images: 12 check crops, 16 calibration crops from the other 20.
    assert report["check_crops"] == 12 and report["calibration_crops"] == 16
    assert report["check_disjoint_from_calibration"] is True
    for level in ("0", "2"):
        assert report["levels"][level]["size_bytes"] == os.path.getsize(
            out / f"model_q{level}.tflite")
        assert report["levels"][level]["cosine_mean"] >= STATED_BOUNDS[int(level)]


def test_cli_exits_non_zero_below_the_bound_and_on_bad_input(tiny, tmp_path, capsys):
    args = ["--model", tiny["path"], "--list", os.path.join(tiny["data"], "test.json"),
            "--image-root", os.path.join(tiny["data"], "images"), "--levels", "0",
            "--out", str(tmp_path / "out"), "--calibration-images", "4", "--check-images", "4"]
    assert export_tflite.main(args + ["--min-cosine", "1.01"]) == 1      # a cosine never exceeds 1
    report = json.loads((tmp_path / "out" / "tflite_report.json").read_text())
    assert report["passed"] is False and report["levels"]["0"]["min_mean_cosine"] == 1.01
    assert "BELOW BOUND" in capsys.readouterr().out

    bad = list(args)
    bad[1] = str(tmp_path / "missing_model")
    assert export_tflite.main(bad) == 2
    assert "missing_model" in capsys.readouterr().err


LAYERED = ("models/tflite.py", "components/tflite_exporter/component.py")


def imported_modules(path):
    """Every module an `import` statement in the file names, function-local imports included (the
    project's one resolver, pipeline/code_version.py)."""
    with open(os.path.join(REPO_ROOT, path)) as f:
        source = f.read()
    module = path[:-len(".py")].replace("/", ".")
    return [name for _, name in code_version.imported_modules(source, module)]


def test_the_conversion_core_and_the_component_import_nothing_from_tools():
    """tools/ sits above models/ and components/: imports point down only, also inside functions
    and also transitively (a module they import must not pull tools in either)."""
    for path in LAYERED:
        upward = [name for name in imported_modules(path)
                  if name == "tools" or name.startswith("tools.")]
        assert not upward, (path, upward)
    probe = ("import sys, models.tflite, components.tflite_exporter.component; "
             "print(sorted(m for m in sys.modules if m == 'tools' or m.startswith('tools.')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_import_check_sees_function_local_imports(tmp_path):
    """The check above must catch the upward import the component used to make lazily."""
    source = "def f():\n    from tools import export_tflite\n    import tools.face_lists\n"
    (tmp_path / "probe.py").write_text(source)
    names = imported_modules(str(tmp_path / "probe.py"))
    assert "tools.export_tflite" in names and "tools.face_lists" in names


def test_the_tflite_steps_crops_are_the_stored_uint8_crops_over_255(tmp_path):
    """The component's calibration and check crops: the Transform's eval crops (uint8 bytes)
    decoded to float32 uint8 / 255, in file order, at most `limit` of them."""
    from tfx.types import standard_artifacts

    from components.tflite_exporter.component import eval_crops
    from core import features

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    (tmp_path / "Split-eval").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "Split-eval" / "data.gz"), options="GZIP") as writer:
        for image in pixels:
            example = tf.train.Example()
            example.features.feature[features.IMAGE].bytes_list.value.append(image.tobytes())
            writer.write(example.SerializeToString())
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path)
    examples.split_names = '["eval"]'
    crops = eval_crops(examples, 4)
    assert crops.dtype == np.float32
    np.testing.assert_array_equal(crops, pixels[:4].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(eval_crops(examples, 50),
                                  pixels.astype(np.float32) / np.float32(255))


def _copy(tiny, tmp_path, asset_text=None, marker=True):
    """A copy of the tiny SavedModel as the Pusher leaves a version: its marker file (unless
    `marker` is False) and `asset_text` as assets/operating_point.json (none when None)."""
    import shutil

    from core import operating_point

    copy = str(tmp_path / "pushed")
    shutil.copytree(tiny["path"], copy)
    if marker:
        with open(os.path.join(copy, operating_point.PUSH_MARKER), "w") as f:
            json.dump({"model_id": 1, "model_uri": "/m"}, f)
    if asset_text is not None:
        os.makedirs(os.path.join(copy, "assets"), exist_ok=True)
        with open(os.path.join(copy, operating_point.ASSET), "w") as f:
            f.write(asset_text)
    return copy


def _with_point(tiny, tmp_path, threshold):
    """A copy of the tiny SavedModel carrying an operating point, as a pushed model does."""
    from core import operating_point

    text = operating_point.dumps(point_for("/m", threshold))
    return _copy(tiny, tmp_path, text), text


def test_the_tflite_model_carries_the_saved_models_operating_point_and_the_check_reads_it(
        tiny, tmp_path):
    from models import tflite_metadata

    source, text = _with_point(tiny, tmp_path, 0.3125)
    report = tflite_core.export_tflite(source, [0], str(tmp_path / "out"), None, tiny["test"])
    path = tflite_core.tflite_path(str(tmp_path / "out"), 0)
    assert tflite_metadata.read_operating_point(path) == text          # byte for byte
    with open(os.path.join(source, "assets", "operating_point.json")) as f:
        shipped = json.load(f)["threshold"]
    assert json.loads(tflite_metadata.read_operating_point(path))["threshold"] == shipped
    entry = report["levels"]["0"]
    assert entry["threshold"] == report["saved_model_threshold"] == shipped
    assert entry["passed"] and report["passed"] and report["operating_point_error"] is None
    # The model with its metadata still runs and embeds as before.
    assert numpy_cosines(tflite_core.run_tflite(path, tiny["test"]),
                         tiny["reference"]).mean() >= STATED_BOUNDS[0]


@pytest.mark.parametrize("asset,marker,reason", [
    (None, True, "is missing"),
    (None, False, "is missing"),                     # not marked, but the caller says pushed
    ("placeholder", True, "holds no threshold"),
    ("{\"threshold\": 0.3, ", True, "not valid JSON"),
    ("{\"threshold\": 0.3, \"target_fmr\": 0.001}", True, "missing rates"),
], ids=["no_asset", "no_asset_told_pushed", "placeholder", "truncated", "incomplete"])
def test_a_pushed_model_without_a_valid_operating_point_fails_the_check_naming_the_file(
        tiny, tmp_path, asset, marker, reason):
    """No threshold on either side is no match for a pushed model: every level fails, although its
    embeddings pass their bound, and the report names the asset and what is wrong with it."""
    from core import operating_point
    from models import tflite_metadata

    if asset == "placeholder":
        asset = json.dumps(operating_point.PLACEHOLDER)
    source = _copy(tiny, tmp_path, asset, marker)
    report = tflite_core.export_tflite(source, [0], str(tmp_path / "out"), None, tiny["test"],
                                       pushed=not marker)
    path = os.path.join(source, "assets", "operating_point.json")
    assert path in report["operating_point_error"] and reason in report["operating_point_error"]
    entry = report["levels"]["0"]
    assert entry["cosine_mean"] >= STATED_BOUNDS[0]
    assert not entry["threshold_matches"] and not entry["passed"] and not report["passed"]
    assert tflite_metadata.read_operating_point(tflite_core.tflite_path(str(tmp_path / "out"), 0)) is None


def test_the_cli_fails_a_pushed_model_without_its_operating_point_naming_the_file(tiny, tmp_path,
                                                                                  capsys):
    source = _copy(tiny, tmp_path)
    args = ["--model", source, "--list", os.path.join(tiny["data"], "test.json"),
            "--image-root", os.path.join(tiny["data"], "images"), "--levels", "0",
            "--out", str(tmp_path / "out"), "--calibration-images", "4", "--check-images", "4"]
    assert export_tflite.main(args) == 1
    captured = capsys.readouterr()
    assert os.path.join(source, "assets", "operating_point.json") in captured.err
    assert "MISMATCH" in captured.out and "BELOW BOUND" not in captured.out


def test_a_tflite_model_whose_threshold_differs_from_the_saved_models_fails_the_check(
        tiny, tmp_path, monkeypatch):
    from core import operating_point
    from models import tflite_metadata

    source, _ = _with_point(tiny, tmp_path, 0.3125)
    real = tflite_metadata.with_operating_point
    monkeypatch.setattr(tflite_metadata, "with_operating_point", lambda model, text: real(
        model, operating_point.dumps(point_for("/m", 0.5))))
    report = tflite_core.export_tflite(source, [0], str(tmp_path / "out"), None, tiny["test"])
    assert report["levels"]["0"]["threshold"] == 0.5
    assert not report["levels"]["0"]["passed"] and not report["passed"]


def test_a_saved_model_that_was_not_pushed_gives_tflite_without_an_operating_point(
        exported, tiny, tmp_path):
    """No asset, or the export's placeholder, without the Pusher's marker: an exported model,
    which has no threshold to carry; the check passes on the embeddings alone."""
    from core import operating_point
    from models import tflite_metadata

    out, report = exported
    assert report["saved_model_threshold"] is None and report["operating_point_error"] is None
    assert tflite_metadata.read_operating_point(tflite_core.tflite_path(out, 0)) is None
    source = _copy(tiny, tmp_path, json.dumps(operating_point.PLACEHOLDER), marker=False)
    report = tflite_core.export_tflite(source, [0], str(tmp_path / "out"), None, tiny["test"])
    assert report["passed"] and report["operating_point_error"] is None
    assert report["levels"]["0"]["threshold"] is None


def test_the_files_go_to_any_uri_tf_io_gfile_writes(tiny, exported, tmp_path):
    # A pipeline root on gs:// gives the step a remote output URI: the models and the report are
    # written through tf.io.gfile (checked here on TensorFlow's in-memory file system), while the
    # interpreter checks each level on a local copy.
    out = f"ram://tflite-{os.getpid()}/{tmp_path.name}/out"
    report = tflite_core.export_tflite(tiny["path"], [0], out, calibration_crops=None,
                                       check_crops=tiny["test"])
    remote = tflite_core.tflite_path(out, 0)
    assert report["levels"]["0"]["path"] == remote
    assert report["levels"]["0"]["size_bytes"] == tf.io.gfile.stat(remote).length
    with tf.io.gfile.GFile(os.path.join(out, tflite_core.REPORT_FILE)) as f:
        assert json.load(f) == report
    local = str(tmp_path / "copy.tflite")
    tf.io.gfile.copy(remote, local)
    same_level = tflite_core.tflite_path(exported[0], 0)
    np.testing.assert_allclose(tflite_core.run_tflite(local, tiny["test"]),
                               tflite_core.run_tflite(same_level, tiny["test"]), atol=1e-5)
    assert report["passed"] and report["levels"]["0"]["cosine_mean"] == pytest.approx(
        exported[1]["levels"]["0"]["cosine_mean"], abs=1e-6)
