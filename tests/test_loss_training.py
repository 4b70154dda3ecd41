"""Every training model learns: Recall@1 on unseen identities clearly above the untrained network."""
import pytest

from benchmarks import loss_quality
from core.settings.model import LOSSES
from pipeline import sample_data


@pytest.mark.slow
def test_every_loss_beats_its_untrained_network(tmp_path):
    sample_data.generate(str(tmp_path), seed=3, train_identities=40, train_images=8,
                              test_identities=16, test_images=5, workers=2, progress=False)
    rows = loss_quality.run(str(tmp_path), epochs=8, image_size=32, losses=list(LOSSES))
    by_loss = {row["loss"]: row for row in rows}
    assert set(by_loss) == {"raw pixels", *LOSSES}
    for loss in LOSSES:
        before, after = by_loss[loss]["untrained"]["overall"], by_loss[loss]["trained"]["overall"]
        assert after >= before + 0.15, (loss, before, after)
