"""Real photographs (tests/data/london_faces, CC BY 4.0): ingest accepts every record."""
import json
import os

import apache_beam as beam
import tensorflow as tf

from components.face_example_gen import beam_ingest
from tests.conftest import LONDON_FACES
from tests.pipeline_helpers import feature_value


def test_all_204_real_photographs_are_accepted_with_five_groups(tmp_path):
    list_path = os.path.join(LONDON_FACES, "image_list.json")
    with open(list_path) as f:
        expected = json.load(f)
    collected = {}
    with beam.Pipeline() as pipeline:
        outputs = pipeline | beam_ingest.IngestFaceRecords(list_path,
                                                           os.path.join(LONDON_FACES, "images"))
        beam_ingest.write_quarantine_and_summary(outputs, str(tmp_path / "q.jsonl"),
                                                 str(tmp_path / "s.json"))
        _ = (outputs["examples"]
             | beam.Map(tf.train.Example.FromString)
             | beam.Map(lambda e: json.dumps([feature_value(e, "path").decode(),
                                              feature_value(e, "group").decode(),
                                              feature_value(e, "label")]))
             | beam.io.WriteToText(str(tmp_path / "rows"), num_shards=1, shard_name_template=""))
    summary = beam_ingest.read_summary(str(tmp_path / "s.json"))
    assert (summary["input"], summary["valid"], summary["quarantined"]) == (204, 204, 0)
    with open(tmp_path / "rows") as f:
        for line in f:
            path, group, label = json.loads(line)
            collected[path] = (group, label)
    assert set(collected) == set(expected)
    groups = {group for group, _ in collected.values()}
    assert groups == {"white", "black", "east_asian", "west_asian", "mixed"}
    assert all(collected[k][1] == v["label"] for k, v in expected.items())
    assert os.path.exists(os.path.join(LONDON_FACES, "ATTRIBUTION.md"))
