"""kubeflow_runner's --submit path: the compiled spec reaches a KFP endpoint or Vertex AI Pipelines.
Both are stood in for by an HTTP server on 127.0.0.1 that records what it receives."""
import contextlib
import http.server
import json
import threading

import pytest

from pipeline import submit
from tests import kfp_harness

ACME_NUMBER = "271828"


class Recorder(http.server.BaseHTTPRequestHandler):
    requests = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append((self.command, self.path, json.loads(body) if body else None))
        if "/pipelineJobs" in self.path:            # Vertex AI: the created PipelineJob
            job_id = self.path.split("pipelineJobId=")[1].split("&")[0]
            answer = {"name": f"projects/acme/locations/europe-west4/pipelineJobs/{job_id}",
                      "state": 2}
        elif self.path.startswith("/apis/v2beta1/experiments") and self.command == "POST":
            answer = {"experiment_id": "exp-7", "display_name": "ffem-tfx"}
        elif self.path.startswith("/apis/v2beta1/runs"):
            answer = {"run_id": "run-42", "state": "PENDING"}
        elif self.path.startswith("/storage/v1/b/missing"):   # a bucket that does not exist
            data = json.dumps({"error": {"code": 404, "message": "Not Found"}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        elif self.path.startswith("/storage/v1/b/"):    # Cloud Storage: the bucket, owned by acme
            answer = {"name": self.path.split("/")[4].split("?")[0], "projectNumber": ACME_NUMBER}
        else:
            answer = {}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve():
    """A Recorder on a free port of 127.0.0.1: (base URL, the list of requests it received)."""
    Recorder.requests = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", Recorder.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    with serve() as served:
        yield served


def as_proto(pipeline_spec):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec())


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spec")
    kfp_harness.compile_spec(directory)
    return str(directory / "spec.json")


def test_submit_to_a_kfp_endpoint_uploads_the_compiled_spec_and_links_the_run(server, spec_file):
    endpoint, requests = server
    link = submit.submit_to_kfp(spec_file, endpoint, run_name="nightly")
    assert link == f"{endpoint}/#/runs/details/run-42"
    [run] = [body for method, path, body in requests
             if method == "POST" and path.startswith("/apis/v2beta1/runs")]
    with open(spec_file) as f:
        compiled = json.load(f)
    # The same spec as a proto (JSON drops proto3 defaults such as a task's enableCache: false).
    assert as_proto(run["pipeline_spec"]) == as_proto(compiled["pipelineSpec"])
    assert run["display_name"] == "nightly" and run["experiment_id"] == "exp-7"
    assert run["runtime_config"]["pipeline_root"] == "gs://acme/root"


def test_submit_to_vertex_sends_the_pipeline_job_and_links_the_console(server, spec_file,
                                                                        monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform.utils import resource_manager_utils

    endpoint, requests = server
    # The Vertex SDK checks that the pipeline root's bucket exists and belongs to the project:
    # Cloud Storage's JSON API through the client's emulator setting (the same server) and
    # Resource Manager's project number, stood in for here; nothing goes to the network.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    monkeypatch.setattr(resource_manager_utils, "get_project_number",
                        lambda project, credentials=None: ACME_NUMBER if project == "acme" else "0")
    link = submit.submit_to_vertex(spec_file, project="acme", region="europe-west4",
                                   service_account="runner@acme.iam.gserviceaccount.com",
                                   credentials=AnonymousCredentials(), api_endpoint=endpoint)
    [(method, path, job)] = [r for r in requests if "/pipelineJobs" in r[1]]
    assert method == "POST" and path.startswith("/v1/projects/acme/locations/europe-west4/")
    with open(spec_file) as f:
        compiled = json.load(f)
    assert job["pipelineSpec"] == compiled["pipelineSpec"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme/root"
    assert job["serviceAccount"] == "runner@acme.iam.gserviceaccount.com"
    job_id = path.split("pipelineJobId=")[1].split("&")[0]
    assert "console.cloud.google.com" in link and job_id in link and "acme" in link
    assert any(m == "GET" and p.startswith("/storage/v1/b/acme") for m, p, _ in requests)


def test_a_file_that_is_not_a_compiled_job_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="pipelineSpec"):
        submit.submit_to_kfp(str(bad), "http://127.0.0.1:9")


def test_a_pipeline_root_in_a_missing_bucket_is_refused_before_submitting(server, spec_file,
                                                                         tmp_path, monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    endpoint, requests = server
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    with open(spec_file) as f:
        job = json.load(f)
    job["runtimeConfig"]["gcsOutputDirectory"] = "gs://missing/root"
    other = tmp_path / "spec.json"
    other.write_text(json.dumps(job))
    with pytest.raises(ValueError, match="bucket gs://missing does not exist"):
        submit.submit_to_vertex(str(other), project="acme", region="europe-west4",
                                credentials=AnonymousCredentials(), api_endpoint=endpoint)
    assert not [r for r in requests if "/pipelineJobs" in r[1]]
