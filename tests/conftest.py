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
    from tools import make_sample_data

    out = str(tmp_path_factory.mktemp("sample"))
    make_sample_data.generate(out, seed=1, train_identities=12, train_images=3, test_identities=8,
                              test_images=4, workers=2, progress=False)
    return out
