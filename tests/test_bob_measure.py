"""The 1:1 figures against Idiap's bob.measure (`far_threshold`, `farfrr`), an independent
implementation of FAR / FRR at a threshold, run in its own environment (scripts/bob_env.sh, made by
`make test`): scores written to a file, bob.measure called in a subprocess.

What must agree: at the project's threshold, bob's (FAR, FRR) of every scope's impostor and genuine
scores are the project's (FMR, FNMR) exactly; bob's own `far_threshold` at the target (the lowest
impostor score whose FAR is at most the target) admits exactly the same impostor pairs, and the
project's threshold is at most bob's (the smallest threshold with FMR <= target). Both on scores
with heavy ties and on float scores (where the project's float32 products and the float64 scores
written here differ in the last bits: the threshold sits midway between two scores, so the same
pairs are counted)."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.verification import verification
from tests.literal_bootstrap import pair_scores
from tests.test_recall import exact_random_data

ROOT = Path(__file__).resolve().parent.parent
BOB_PYTHON = Path(os.environ.get("FFEM_BOB_ENV", ROOT / ".cache" / "bob-env")) / "bin" / "python"

SCRIPT = """
import json, sys
import numpy as np
from bob.measure import far_threshold, farfrr
data = np.load(sys.argv[1])
result = {}
for scope in data["scopes"]:
    negatives, positives = data["impostor_" + scope], data["genuine_" + scope]
    result[scope] = farfrr(negatives, positives, float(data["threshold"]))
overall = far_threshold(data["impostor_overall"], data["genuine_overall"], float(data["target"]))
result["bob_threshold"] = float(overall)
result["bob_at_own"] = farfrr(data["impostor_overall"], data["genuine_overall"], overall)
print(json.dumps(result))
"""


def bob(tmp_path, scores, labels, groups, threshold, target):
    if not BOB_PYTHON.exists():
        pytest.skip(f"bob.measure's environment is absent ({BOB_PYTHON}): run `make bob-env` "
                    "(scripts/bob_env.sh)")
    i, j = np.triu_indices(len(labels), 1)
    genuine = labels[i] == labels[j]
    names = ["overall"] + sorted(set(groups.tolist()))
    arrays = {"scopes": np.array(names), "threshold": threshold, "target": target}
    for name in names:
        scope = np.ones(len(i), bool) if name == "overall" else (groups[i] == name) & (groups[j] == name)
        arrays["impostor_" + name] = scores[i, j][scope & ~genuine]
        arrays["genuine_" + name] = scores[i, j][scope & genuine]
    np.savez(tmp_path / "scores.npz", **arrays)
    (tmp_path / "bob_check.py").write_text(SCRIPT)
    out = subprocess.run([str(BOB_PYTHON), str(tmp_path / "bob_check.py"), str(tmp_path / "scores.npz")],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), names


def clustered_floats(seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(120), 3)
    embeddings = rng.normal(size=(120, 32))[labels] + 0.9 * rng.normal(size=(360, 32))
    groups = np.array(["east", "north", "south", "west"])[labels % 4]
    return embeddings.astype(np.float32), labels, groups


@pytest.mark.parametrize("data, target", [(lambda: exact_random_data(2, 211, 8), 1e-2),
                                          (lambda: exact_random_data(3, 300, 16), 0.2),
                                          (lambda: clustered_floats(0), 1e-3),
                                          (lambda: clustered_floats(1), 1e-2)],
                         ids=["ties-1e-2", "ties-0.2", "floats-1e-3", "floats-1e-2"])
def test_fmr_and_fnmr_of_every_scope_equal_bob_measure(tmp_path, data, target):
    embeddings, labels, groups = data()
    summary = verification(embeddings, labels, groups, target).summary
    result, names = bob(tmp_path, pair_scores(embeddings), labels, groups, summary["threshold"],
                        target)
    for name in names:
        far, frr = result[name]
        assert (far, frr) == pytest.approx((summary[name]["fmr"], summary[name]["fnmr"]), abs=1e-15), name
    assert result["bob_at_own"][0] == pytest.approx(summary["overall"]["fmr"], abs=1e-15)
    if result["bob_at_own"][0] > 0:
        # (When nothing may match, bob takes the next float above the largest impostor score and
        # the project the midpoint to the next score: both admit no impostor pair.)
        assert summary["threshold"] <= result["bob_threshold"]
    assert summary["overall"]["fnmr"] <= result["bob_at_own"][1]
