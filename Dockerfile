# The Kubeflow image: TFX 1.16 plus this package. Build from the repository root:
#   docker build -t gcr.io/<project>/ffem-tfx:<tag> . && docker push gcr.io/<project>/ffem-tfx:<tag>
# kubeflow_runner.py expects the repository at /pipeline (the schema file is read from there).

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

# The package's model files, verified and unpacked into the cache folder the code looks in.
COPY --from=face-api /fetch/*.tgz /pipeline/.cache/face-api/
RUN python -c "from models.pretrained import fetch; fetch.fetch(); fetch.model_dir()"
