"""The evaluator's Beam embedding (components/recall_evaluator/beam_embed.py) against the
single-process embedding: the SavedModel's `serving_default` called on the records in file order,
reordered here by (path, SHA-256 of the record), the module's documented order. The model is
hand-made: it decodes `image_raw`, and its embedding is the L2-normalised mean colour of the four
quadrants of the face box (minus 0.5), so it depends on every record's pixels and box; the test
also checks it against NumPy and PIL written from that formula."""
import hashlib
import io
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.recall_evaluator import beam_embed
from core import features
from tests import image_factory

IN_PROCESS = ["--runner=FnApiRunner"]
TWO_WORKERS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
               "--direct_num_workers=2"]


class BoxMeanModel(tf.Module):
    """serving_default: serialized raw Examples in, `embedding` [n, 12] out."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {
            features.IMAGE_RAW: tf.io.FixedLenFeature([], tf.string),
            **{name: tf.io.FixedLenFeature([], tf.int64) for name in features.BOX_KEYS}})

        def one(args):
            raw, x1, y1, x2, y2 = args
            image = tf.io.decode_image(raw, channels=3, expand_animations=False)
            crop = tf.cast(image[y1:y2, x1:x2], tf.float32) / 255.0
            h, w = (y2 - y1) // 2, (x2 - x1) // 2
            quadrants = [crop[:h, :w], crop[:h, w:], crop[h:, :w], crop[h:, w:]]
            return tf.concat([tf.reduce_mean(q, axis=[0, 1]) for q in quadrants], 0)

        vectors = tf.map_fn(one, (parsed[features.IMAGE_RAW],) + tuple(
            parsed[name] for name in features.BOX_KEYS), fn_output_signature=tf.TensorSpec([12], tf.float32))
        return {"embedding": tf.math.l2_normalize(vectors - 0.5, axis=1)}


def reference_embedding(raw: bytes, box) -> np.ndarray:
    """The model's formula in NumPy on PIL's decode."""
    x1, y1, x2, y2 = box
    crop = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float64)[y1:y2, x1:x2] / 255
    h, w = (y2 - y1) // 2, (x2 - x1) // 2
    v = np.concatenate([q.mean(axis=(0, 1)) for q in (crop[:h, :w], crop[:h, w:], crop[h:, :w],
                                                      crop[h:, w:])]) - 0.5
    return v / np.linalg.norm(v)


def image(seed: int) -> bytes:
    """A PNG with a random colour gradient (box means differ between images and quadrants)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]
    base, gx, gy = rng.uniform(0, 255, 3), rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
    pixels = np.clip(base + xx[..., None] * gx + yy[..., None] * gy, 0, 255).astype(np.uint8)
    return image_factory.encode(pixels, "PNG")


def example(path: str, label: int, group: str, raw: bytes, box, with_label=True) -> bytes:
    e = tf.train.Example()
    f = e.features.feature
    f[features.IMAGE_RAW].bytes_list.value.append(raw)
    for name, value in zip(features.BOX_KEYS, box):
        f[name].int64_list.value.append(value)
    if with_label:
        f[features.LABEL].int64_list.value.append(label)
    f[features.GROUP].bytes_list.value.append(group.encode())
    f[features.PATH].bytes_list.value.append(path.encode())
    return e.SerializeToString()


def write_files(directory, records, n_files=2):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(n_files):
        paths.append(os.path.join(directory, f"data-{i}.gz"))
        with tf.io.TFRecordWriter(paths[-1], options="GZIP") as writer:
            for record in records[i::n_files]:
                writer.write(record)
    return paths


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """18 records (6 identities x 3, groups a/b/c) written in shuffled order over two files, plus
    a second record under an existing path with another box (ties on path)."""
    work = tmp_path_factory.mktemp("beam_embed")
    model_dir = str(work / "model")
    module = BoxMeanModel()
    tf.saved_model.save(module, model_dir, signatures={"serving_default": module.serve})
    rng = np.random.default_rng(3)
    rows = []
    for label in range(6):
        for k in range(3):
            box = (int(rng.integers(0, 20)), int(rng.integers(0, 14)), int(rng.integers(36, 64)),
                   int(rng.integers(28, 48)))
            rows.append((f"{'abc'[label % 3]}/id{label}/{k}.png", label, "abc"[label % 3],
                         image(10 * label + k), box))
    rows.append((rows[4][0], rows[4][1], rows[4][2], rows[4][3], (1, 1, 40, 30)))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    records = [example(*row) for row in rows]
    return {"model": model_dir, "files": write_files(str(work / "eval"), records), "rows": rows,
            "records": records, "work": work}


def single_process(model_dir, files, batch_size=4):
    """The evaluator's former one-process loop: the signature on batches, in file order."""
    embed = tf.saved_model.load(model_dir).signatures["serving_default"]
    records, out = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size):
        out.append(embed(examples=batch)["embedding"].numpy())
        records += [r for r in batch.numpy()]
    return records, np.concatenate(out)


def expected_order(records):
    """(path, sha256(record)), computed here from the records themselves."""
    keys = [(tf.train.Example.FromString(r).features.feature[features.PATH].bytes_list.value[0],
             hashlib.sha256(r).digest()) for r in records]
    return sorted(range(len(records)), key=lambda i: keys[i])


def run(split, argv, files=None, models=None, name="run"):
    return beam_embed.embed_split(models or {"candidate": split["model"]}, files or split["files"], 8,
                                  lambda: beam.Pipeline(argv=argv), str(split["work"] / name))


@pytest.fixture(scope="module")
def in_process(split):
    """Candidate and baseline (the same model here) embedded by one in-process pipeline."""
    return run(split, IN_PROCESS, models={"candidate": split["model"], "baseline": split["model"]})


def test_beam_embeddings_equal_the_single_process_ones_in_path_order(split, in_process):
    gathered = in_process["candidate"]
    records, reference = single_process(split["model"], split["files"])
    order = expected_order(records)
    np.testing.assert_allclose(gathered["embeddings"], reference[order], atol=1e-5, rtol=0)
    by_record = {r: row for r, row in zip(split["records"], split["rows"])}
    rows = [by_record[records[i]] for i in order]
    assert gathered["paths"].tolist() == [row[0] for row in rows]
    assert gathered["labels"].tolist() == [row[1] for row in rows]
    assert gathered["groups"].tolist() == [row[2] for row in rows]
    # The model computes what it says (so the comparison above compares image-dependent vectors).
    np.testing.assert_allclose(gathered["embeddings"],
                               [reference_embedding(row[3], row[4]) for row in rows], atol=1e-5)
    assert gathered["embeddings"].dtype == np.float32
    # The scratch records are removed once gathered.
    assert not os.path.exists(split["work"] / "run" / "embeddings")


def test_candidate_and_baseline_come_from_one_pipeline_in_the_same_order(in_process):
    assert in_process["candidate"]["paths"].tolist() == in_process["baseline"]["paths"].tolist()
    # Equal up to float32 rounding: the two branches may batch the records differently.
    np.testing.assert_allclose(in_process["candidate"]["embeddings"],
                               in_process["baseline"]["embeddings"], atol=1e-6, rtol=0)


def test_the_order_does_not_depend_on_file_order_or_file_layout(split, in_process):
    one = in_process["candidate"]
    # The same records, reversed and regrouped into three files.
    files = write_files(str(split["work"] / "relaid"), split["records"][::-1], n_files=3)
    other = run(split, IN_PROCESS, files=files[::-1], name="relaid-run")["candidate"]
    assert other["paths"].tolist() == one["paths"].tolist()
    assert other["labels"].tolist() == one["labels"].tolist()
    np.testing.assert_allclose(other["embeddings"], one["embeddings"], atol=1e-6, rtol=0)


def test_a_record_without_a_label_is_refused_by_name(split):
    raw = image(99)
    files = write_files(str(split["work"] / "bad"), split["records"][:3] + [
        example("x/nolabel.png", 0, "x", raw, (0, 0, 30, 30), with_label=False)], n_files=1)
    with pytest.raises(Exception, match=r"eval record 'x/nolabel.png': needs one int64 'label'"):
        run(split, IN_PROCESS, files=files, name="bad-run")


@pytest.mark.slow
def test_two_workers_give_the_in_process_arrays(split, in_process):
    one = in_process["candidate"]
    two = run(split, TWO_WORKERS, name="two-workers")["candidate"]
    assert two["paths"].tolist() == one["paths"].tolist()
    assert two["groups"].tolist() == one["groups"].tolist()
    np.testing.assert_allclose(two["embeddings"], one["embeddings"], atol=1e-6, rtol=0)
