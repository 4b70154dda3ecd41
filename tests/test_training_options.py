"""Trainer options against their formulas: augmentation, optimizers, schedules, strategy choice."""
import json

import numpy as np
import pytest
import tensorflow as tf

from models import data, trainer
from models.trainer import TrainingConfig

RNG = np.random.default_rng(0)


def images(batch=64, size=16):
    return tf.constant(RNG.uniform(0.1, 0.9, size=(batch, size, size, 3)).astype(np.float32))


def only(**switches):
    flags = {"flip": False, "colour": False, "box_jitter": False, "cutout": False}
    return {**flags, **switches}


def test_no_augmentation_is_the_identity():
    x = images()
    out = data.augment(x, tf.random.Generator.from_seed(1), **only())
    np.testing.assert_array_equal(out.numpy(), x.numpy())


def test_flip_mirrors_about_half_of_the_images_and_leaves_the_rest():
    x = images().numpy()
    out = data.augment(tf.constant(x), tf.random.Generator.from_seed(1), **only(flip=True)).numpy()
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_colour_is_one_affine_map_per_image_on_grey_images():
    """Contrast c and brightness b about the image mean m: out = (x - m) c + m + b (saturation
    does nothing to grey pixels). Fit out against x per image: slope in [0.7, 1.3]."""
    grey = np.repeat(RNG.uniform(0.3, 0.7, size=(32, 16, 16, 1)), 3, axis=3).astype(np.float32)
    out = data.augment(tf.constant(grey), tf.random.Generator.from_seed(2),
                       **only(colour=True)).numpy()
    slopes = []
    for o, x in zip(out, grey):
        slope, intercept = np.polyfit(x.ravel(), o.ravel(), 1)
        brightness = intercept - (1 - slope) * x.mean()
        np.testing.assert_allclose(o, x * slope + intercept, atol=1e-5)
        assert 0.7 - 1e-4 <= slope <= 1.3 + 1e-4 and -0.15 - 1e-4 <= brightness <= 0.15 + 1e-4
        slopes.append(slope)
    assert np.std(slopes) > 0.05            # a different draw per image


def test_cutout_fills_one_square_with_the_image_mean_or_nothing():
    x = images(batch=32, size=20).numpy()
    out = data.augment(tf.constant(x), tf.random.Generator.from_seed(3),
                       **only(cutout=True)).numpy()
    cut = 0
    for o, i in zip(out, x):
        changed = np.any(o != i, axis=-1)
        if not changed.any():
            continue
        cut += 1
        rows, cols = np.nonzero(changed)
        square = np.zeros_like(changed)
        square[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert np.array_equal(changed, square)        # one axis-aligned rectangle
        np.testing.assert_allclose(o[changed], i.mean(), atol=1e-6)
    assert 4 < cut < 28


def test_box_jitter_samples_each_image_from_its_jitter_box_like_the_serving_crop():
    """The augmented crop is the input sampled (NumPy: half-pixel centres, edge clamping, black
    beyond the crop) from the box jitter_boxes draws first from the same generator state."""
    from tests.test_preprocessing import numpy_sample

    x = images(batch=8, size=20).numpy()
    out = data.augment(tf.constant(x), tf.random.Generator.from_seed(5),
                       **only(box_jitter=True)).numpy()
    boxes = data.jitter_boxes(tf.random.Generator.from_seed(5), 8, 20).numpy()
    for o, i, box in zip(out, x, boxes):
        np.testing.assert_allclose(o, np.clip(numpy_sample(i, box, 20), 0, 1), atol=2e-5)


def test_jitter_boxes_zoom_in_and_out_around_the_serving_crop_with_mean_scale_one():
    size = 112
    boxes = data.jitter_boxes(tf.random.Generator.from_seed(6), 20000, size).numpy().astype(float)
    widths, heights = (boxes[:, 2] - boxes[:, 0]) / size, (boxes[:, 3] - boxes[:, 1]) / size
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2 / size, (boxes[:, 1] + boxes[:, 3]) / 2 / size
    assert heights.min() >= 0.9 - 1e-6 and heights.max() <= 1.1 + 1e-6
    assert widths.min() >= 0.9 * 0.95 - 1e-6 and widths.max() <= 1.1 * 1.05 + 1e-6
    assert (heights < 0.95).mean() > 0.2 and (heights > 1.05).mean() > 0.2      # both directions
    # Uniform draws: the mean scale is 1 (the serving crop's size), to sampling error.
    assert abs(heights.mean() - 1.0) < 0.003 and abs(widths.mean() - 1.0) < 0.003
    assert np.all(np.abs(centre_x - 0.5) <= 0.05 + 1e-6) and abs(centre_x.mean() - 0.5) < 0.002
    assert np.all(np.abs(centre_y - 0.5) <= 0.05 + 1e-6) and abs(centre_y.mean() - 0.5) < 0.002
    ratio = widths / heights
    assert ratio.min() >= 0.95 - 1e-6 and ratio.max() <= 1.05 + 1e-6


def test_box_jitter_keeps_the_face_size_of_serving_crops_on_average():
    """A horizontal ramp resampled from a box w times the crop's width is a ramp whose slope is
    w times the original's (in the crop's interior): one output pixel spans w input pixels. The
    slopes must go both ways and average E[w] = 1; a sub-box jitter (w <= 1) only zooms in."""
    size = 32
    ramp = np.tile(np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None], (size, 1, 3))
    out = data.augment(tf.constant(np.stack([ramp] * 256)), tf.random.Generator.from_seed(4),
                       **only(box_jitter=True)).numpy()
    step = 1.0 / (size - 1)
    slopes = np.array([np.diff(o[size // 2, 8:24, 0]).mean() / step for o in out])
    assert (slopes > 1.02).any() and (slopes < 0.98).any()
    assert abs(slopes.mean() - 1.0) < 0.01


def test_cosine_schedule_with_warmup_follows_its_formula():
    config = TrainingConfig(learning_rate=0.1, schedule="cosine", warmup_epochs=1.0)
    rate = trainer.learning_rate_schedule(config, total_steps=100, steps_per_epoch=20)
    for step in (0, 10, 20, 60, 100):
        if step <= 20:
            expected = 0.1 * step / 20
        else:
            expected = 0.1 * 0.5 * (1 + np.cos(np.pi * (step - 20) / 80))
        assert float(rate(step)) == pytest.approx(expected, abs=1e-7), step


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    config = TrainingConfig(learning_rate=0.1, schedule="step", optimizer="sgd", momentum=0.8)
    rate = trainer.learning_rate_schedule(config, total_steps=100, steps_per_epoch=10)
    assert [float(rate(s)) for s in (0, 50, 51, 75, 76, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    optimizer = trainer.make_optimizer(config, total_steps=100, steps_per_epoch=10)
    assert isinstance(optimizer, tf.keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.8)


@pytest.mark.parametrize("schedule", ["step", "constant"])
def test_warmup_ramps_every_schedule_then_leaves_it_as_it_was(schedule):
    """warmup_epochs used to apply to cosine only: step and constant ignored it. Now every schedule
    ramps linearly 0 -> learning_rate over the warm-up steps; after them the rate is the
    schedule's own (step keeps its drops at 50 % and 75 % of all steps)."""
    config = TrainingConfig(learning_rate=0.1, schedule=schedule, warmup_epochs=2.0, epochs=10)
    plain = TrainingConfig(learning_rate=0.1, schedule=schedule, epochs=10)
    rate = trainer.learning_rate_schedule(config, total_steps=100, steps_per_epoch=10)
    after = trainer.learning_rate_schedule(plain, total_steps=100, steps_per_epoch=10)
    for step in (0, 5, 10, 19):
        assert float(rate(step)) == pytest.approx(0.1 * step / 20, abs=1e-7), step
    for step in (20, 49, 51, 76, 99):
        expected = float(after(step)) if callable(after) else after
        assert float(rate(step)) == pytest.approx(expected, abs=1e-7), step
    optimizer = trainer.make_optimizer(config, total_steps=100, steps_per_epoch=10)
    assert float(optimizer.learning_rate) == pytest.approx(0.0)     # step 0 of the ramp


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ValueError, match="warmup_epochs must be in"):
        TrainingConfig(epochs=2, warmup_epochs=3)


def test_sgd_nesterov_step_matches_its_update_rule():
    """v <- m v - lr g;  w <- w + m v - lr g  (Keras' Nesterov form), on w = [1, -2], g = w."""
    config = TrainingConfig(learning_rate=0.1, schedule="constant", optimizer="sgd", momentum=0.9)
    optimizer = trainer.make_optimizer(config, total_steps=10, steps_per_epoch=10)
    w = tf.Variable([1.0, -2.0])
    expected, velocity = np.array([1.0, -2.0]), np.zeros(2)
    for _ in range(3):
        optimizer.apply_gradients([(tf.identity(w), w)])
        grad = expected.copy()
        velocity = 0.9 * velocity - 0.1 * grad
        expected = expected + 0.9 * velocity - 0.1 * grad
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_adamw_decays_weights_and_mixed_precision_scales_the_loss():
    config = TrainingConfig(optimizer="adamw", weight_decay=0.05, schedule="constant")
    optimizer = trainer.make_optimizer(config, total_steps=10, steps_per_epoch=10)
    assert isinstance(optimizer, tf.keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(0.05)
    w = tf.Variable([2.0])
    optimizer.apply_gradients([(tf.constant([0.0]), w)])     # no gradient: decay alone
    assert w.numpy()[0] == pytest.approx(2.0 * (1 - 1e-3 * 0.05), rel=1e-6)
    mixed = trainer.make_optimizer(TrainingConfig(mixed_precision=True), 10, 10)
    assert isinstance(mixed, tf.keras.mixed_precision.LossScaleOptimizer)


@pytest.mark.parametrize("distribution,tf_config,gpus,expected", [
    ("auto", None, 0, "one_device"),
    ("auto", None, 1, "one_device"),
    ("auto", None, 2, "mirrored"),
    ("auto", {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}},
     0, "multi_worker"),
    ("auto", {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}}, 4, "multi_worker"),
    ("auto", {"cluster": {"worker": ["a:1"]}}, 2, "mirrored"),
    ("one_device", None, 8, "one_device"),
    ("mirrored", None, 0, "mirrored"),
])
def test_auto_distribution_picks_the_strategy_the_cluster_allows(distribution, tf_config, gpus,
                                                                  expected):
    text = json.dumps(tf_config) if tf_config is not None else None
    assert trainer.resolve_distribution(distribution, text, gpus) == expected


def test_bad_training_settings_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="adamw"):
        TrainingConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="cosine"):
        TrainingConfig(schedule="linear")
    with pytest.raises(ValueError, match="multiple of accumulation_steps"):
        TrainingConfig(batch_size=10, accumulation_steps=4)


def test_arcface_is_the_loss_name_and_angular_margin_an_alias_for_it():
    from core.settings.model import LOSSES, ModelConfig

    assert "ArcFace" in LOSSES and "AngularMargin" not in LOSSES
    old = ModelConfig(loss="AngularMargin", backbone="small_cnn")
    # ArcFace's defaults:
    assert old.loss == "ArcFace" and (old.loss_value("scale"), old.loss_value("margin")) == (60.0, 0.5)
    assert old == ModelConfig(loss="ArcFace", backbone="small_cnn")
    assert ModelConfig().loss == "ArcFace"
    with pytest.raises(ValueError, match="ArcFace"):
        ModelConfig(loss="Arcface")


def test_unknown_training_settings_are_refused_with_the_closest_known_names():
    with pytest.raises(ValueError) as error:
        trainer.check_training_settings({"loss": "ArcFace", "epohcs": 3, "batch_sise": 32,
                                         "zzzz": 1, "code_version": "abc"})
    message = str(error.value)
    for expected in ("'epohcs'; closest known: epochs", "'batch_sise'; closest known: batch_size",
                     "'zzzz'; known: "):
        assert expected in message
    assert "code_version" not in message.split("known")[0]      # the pipeline's key is allowed
    with pytest.raises(ValueError, match="closest known: embedding_size"):
        trainer.check_training_settings({"embeding_size": 8})


def test_the_pipelines_training_settings_pass_the_check():
    from pipeline import configs

    for settings in (configs.trainer_settings(configs.preset(name)) for name in configs.presets()):
        trainer.check_training_settings({**settings, "code_version": "0123"})
        trainer.check_training_settings(settings, replicas=1)


def test_config_from_dict_refuses_keys_that_are_not_its_fields():
    from models.face_model import ModelConfig

    with pytest.raises(ValueError, match="closest known: embedding_size"):
        ModelConfig.from_dict({"embeding_size": 8})
    with pytest.raises(ValueError, match="closest known: learning_rate"):
        TrainingConfig.from_dict({"learning_rte": 0.1})
    with pytest.raises(ValueError, match="unknown setting 'epochs'"):   # a TrainingConfig field
        ModelConfig.from_dict({"loss": "ArcFace", "epochs": 3})
    assert TrainingConfig.from_dict({"epochs": 3}).epochs == 3


@pytest.mark.parametrize("batch_size", [8, 12, 24, 36, 60, 64, 96])
@pytest.mark.parametrize("replicas", [None, 1, 2, 3, 4])
@pytest.mark.parametrize("accumulation_steps", [1, 2, 3, 4, 32])
def test_batch_must_split_over_replicas_then_into_micro_batches(batch_size, replicas,
                                                                  accumulation_steps):
    """The global batch is split evenly over the replicas, then each replica's share into
    accumulation_steps micro-batches (tf.split): both divisions must be exact."""
    per_replica, remainder = divmod(batch_size, replicas or 1)
    valid = remainder == 0 and per_replica % accumulation_steps == 0
    settings = {"batch_size": batch_size, "accumulation_steps": accumulation_steps}
    if valid:
        trainer.check_training_settings(settings, replicas=replicas)
        trainer.check_batch_split(batch_size, accumulation_steps, replicas)
        return
    for check in (lambda: trainer.check_training_settings(settings, replicas=replicas),
                  lambda: trainer.check_batch_split(batch_size, accumulation_steps, replicas)):
        with pytest.raises(ValueError) as error:
            check()
        message = str(error.value)
        assert f"batch_size {batch_size}" in message
        assert f"accumulation_steps {accumulation_steps}" in message
        if replicas is not None:
            assert f"{replicas} replicas" in message


def test_run_fn_refuses_a_batch_that_does_not_split_before_reading_anything(monkeypatch):
    """Batch 64 on 3 replicas with 2 micro-batches used to fail deep inside tf.split."""
    import types

    monkeypatch.setattr(trainer, "choose_strategy",
                        lambda distribution: types.SimpleNamespace(num_replicas_in_sync=3))
    fn_args = types.SimpleNamespace(
        custom_config={"batch_size": 64, "accumulation_steps": 2, "backbone": "small_cnn"},
        transform_output="/nonexistent/transform_graph", train_files=["/nonexistent/*"])
    with pytest.raises(ValueError, match="batch_size 64.*3 replicas.*accumulation_steps 2"):
        trainer.run_fn(fn_args)
    fn_args.custom_config = {"batch_size": 64, "epohcs": 2}
    with pytest.raises(ValueError, match="'epohcs'; closest known: epochs"):
        trainer.run_fn(fn_args)
