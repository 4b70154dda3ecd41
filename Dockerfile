# The Kubeflow image: TFX plus this package, on one of the two pinned stacks (docs/stacks.md):
# TFX 1.21 (Python 3.11, constraints-1.21.txt, Beam 2.77) by default, TFX 1.16 (Python 3.10,
# constraints.txt, Beam 2.74) with
#   --build-arg TFX_VERSION=1.16.0 --build-arg BEAM_PYTHON=3.10 --build-arg BEAM_VERSION=2.74.0
# Build from the repository root:
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
ARG TFX_VERSION=1.21.0
# The Beam SDK image the worker boot program comes from: the stack's Beam and Python (checked below).
ARG BEAM_PYTHON=3.11
ARG BEAM_VERSION=2.77.0

FROM apache/beam_python${BEAM_PYTHON}_sdk:${BEAM_VERSION} AS beam-sdk

FROM node:20-slim AS face-api
ARG FACE_API=@vladmandic/face-api@1.7.15
WORKDIR /fetch
RUN npm pack "$FACE_API" --silent

FROM tensorflow/tfx:${TFX_VERSION}
ARG TFX_VERSION
ARG BEAM_PYTHON
ARG BEAM_VERSION

# TFT's feature layer and the Trainer's export need Keras 2 (tf_keras), in every container.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline
COPY constraints.txt constraints-1.21.txt setup.py ./
# The library layers only: the containers run component executors, never the runners, tools or
# benchmarks.
COPY core/ core/
COPY system/ system/
COPY models/ models/
COPY components/ components/
COPY pipeline/ pipeline/
COPY schema/ schema/

# The stack's constraints keep the base image's TFX stack and add what the package needs
# (dill for tfx-bsl with recent Beam, Pillow, matplotlib for the report). setup.py picks the tfx pin
# from the interpreter, so the image's Python must be the stack's.
RUN case "$TFX_VERSION" in \
      1.16.0) constraints=constraints.txt python=3.10 ;; \
      1.21.0) constraints=constraints-1.21.txt python=3.11 ;; \
      *) echo "TFX_VERSION=$TFX_VERSION: not a pinned stack (1.21.0 or 1.16.0)" >&2; exit 1 ;; \
    esac \
    && python -c "import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(0 if v == '$python' else \
         'TFX $TFX_VERSION image has Python ' + v + ', the pinned stack needs $python')" \
    && pip install --no-cache-dir -c "$constraints" '.[kfp]' \
    && python -c "import components.face_example_gen.component, models.trainer, components.recall_evaluator.component, pipeline.pipeline"

# The evaluation's compiled top-k merge (numba), compiled once here and cached beside core/: no
# pipeline step compiles it (core/block_top_k.py).
RUN python -c "from core import block_top_k; block_top_k.compile_ahead()" && ls core/__pycache__/*.nbi

# Beam's worker boot program, from the SDK image of the Beam version the stack's constraints pin (the
# launcher and the workers must run the same Beam; tests/test_kubeflow_runner.py checks the defaults)
# and of this image's Python: the build stops when the build arguments disagree with the image.
COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam
# The boot program runs the SDK harness in this image's own Python environment, where the package
# and its pinned stack are, instead of creating a virtual environment per worker first.
ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1
RUN python -c "import re, sys, apache_beam; \
python = '%d.%d' % sys.version_info[:2]; \
pin = re.search(r'^apache-beam==(\S+)', open({'3.10': 'constraints.txt'}.get(python, 'constraints-1.21.txt')).read(), re.M).group(1); \
sys.exit(0 if apache_beam.__version__ == pin == '$BEAM_VERSION' and python == '$BEAM_PYTHON' else \
f'Beam {apache_beam.__version__} (pinned {pin}) on Python {python}: the worker boot is from Beam $BEAM_VERSION on $BEAM_PYTHON')" \
    && test -x /opt/apache/beam/boot

# The package's model files, verified and unpacked into the cache folder the code looks in.
COPY --from=face-api /fetch/*.tgz /pipeline/.cache/face-api/
RUN python -c "from models.pretrained import fetch; fetch.fetch(); fetch.model_dir()"

# Dataflow runs the SDK worker container's entrypoint: Beam's boot program.
ENTRYPOINT ["/opt/apache/beam/boot"]
