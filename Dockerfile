# The Kubeflow image: TFX 1.16 plus this package. Build from the repository root:
#   docker build -t gcr.io/<project>/ffem-tfx:<tag> . && docker push gcr.io/<project>/ffem-tfx:<tag>
# kubeflow_runner.py expects the repository at /pipeline (the schema file is read from there).
#
# The same image is the Beam SDK worker container of the pipeline's Beam steps on Dataflow
# (kubeflow_runner.py passes it as --sdk_container_image): Dataflow starts it with its ENTRYPOINT,
# Beam's worker boot program, which runs the SDK harness with this image's Python, Beam and
# package. Kubeflow and Vertex AI start every pipeline step with an explicit command instead.

# The pretrained face-api networks (backbone face_recognition_net, --evaluate-model pretrained:...)
# come from the pinned npm package, fetched here at build time: nothing is downloaded when a step
# runs. models/pretrained/fetch.py checks the tarball's sha256 below and refuses any other.
FROM node:20-slim AS face-api
ARG FACE_API=@vladmandic/face-api@1.7.15
WORKDIR /fetch
RUN npm pack "$FACE_API" --silent

FROM tensorflow/tfx:1.16.0

# TFT's feature layer and the Trainer's export need Keras 2 (tf_keras), in every container.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline
COPY constraints.txt setup.py ./
# The library layers only: the containers run component executors, never the runners, tools or
# benchmarks.
COPY core/ core/
COPY system/ system/
COPY models/ models/
COPY components/ components/
COPY pipeline/ pipeline/
COPY schema/ schema/

# The pinned constraints keep the base image's TFX stack and add what the package needs
# (dill for tfx-bsl with recent Beam, Pillow, matplotlib for the report).
RUN pip install --no-cache-dir -c constraints.txt '.[kfp]' \
    && python -c "import components.face_example_gen.component, models.trainer, components.recall_evaluator.component, pipeline.pipeline"

# Beam's worker boot program, from the SDK image of the Beam version constraints.txt pins (the
# launcher and the workers must run the same Beam; tests/test_kubeflow_runner.py checks the tag)
# and of this image's Python.
COPY --from=apache/beam_python3.10_sdk:2.74.0 /opt/apache/beam /opt/apache/beam
# The boot program runs the SDK harness in this image's own Python environment, where the package
# and its pinned stack are, instead of creating a virtual environment per worker first.
ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1
RUN python -c "import re, sys, apache_beam; \
pin = re.search(r'^apache-beam==(\S+)', open('constraints.txt').read(), re.M).group(1); \
sys.exit(0 if apache_beam.__version__ == pin and sys.version_info[:2] == (3, 10) else \
f'Beam {apache_beam.__version__} on Python {sys.version.split()[0]}: the worker boot is from Beam {pin} on 3.10')" \
    && test -x /opt/apache/beam/boot

# The package's model files, verified and unpacked into the cache folder the code looks in.
COPY --from=face-api /fetch/*.tgz /pipeline/.cache/face-api/
RUN python -c "from models.pretrained import fetch; fetch.fetch(); fetch.model_dir()"

# Dataflow runs the SDK worker container's entrypoint: Beam's boot program.
ENTRYPOINT ["/opt/apache/beam/boot"]
