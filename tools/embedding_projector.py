"""Writes a face list's embeddings with labels and thumbnails for TensorBoard's embedding projector.

    python -m tools.embedding_projector --model runs/serving_model/<version> \\
        --list data/sample/test.json --image-root data/sample/images --out OUT \\
        [--max-images 2000] [--thumbnail 32] [--batch-size 64]
    tensorboard --logdir OUT      # then the PROJECTOR tab (http://localhost:6006/#projector)

Writes into OUT:
    embeddings.tsv          one row per image: its embedding from the SavedModel's `embed_images`
                            signature (image bytes + face box; L2-normalized), tab-separated floats
    metadata.tsv            header `label<TAB>group<TAB>path`, then one row per image, same order
    sprite.png              each face crop as a `--thumbnail`-pixel square, in a ceil(sqrt(n)) x
                            ceil(sqrt(n)) grid, row-major in the same order (unused cells black)
    projector_config.pbtxt  the projector's config: tensor_path, tensor_shape, metadata_path and
                            sprite {image_path, single_image_dim}, all relative to OUT

The projector reads the tensor from embeddings.tsv through `tensor_path` (paths relative to the
config's directory, so OUT can be moved), hence no TF checkpoint of an embedding variable is
written. Group = the key's first path component, label = the list's label, path = the key.

With more than --max-images records, whole identities are drawn at random (fixed seed) until the
limit is reached, so every identity shown has all its images (clusters stay visible); rows keep
the list's order. The thumbnails are `crop_faces` of the same box at thumbnail size: what the
model sees, at another resolution. TensorBoard needs the sprite to be at most 8192 pixels a side.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

from core import features
from models import preprocessing
from models.export import load_signature
from tools.face_lists import group_of, model_tool_parser, read_face_list, read_images

EMBED_IMAGES = "embed_images"          # = models.export.EMBED_IMAGES
EMBEDDINGS_FILE = "embeddings.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
CONFIG_FILE = "projector_config.pbtxt"   # the name TensorBoard looks for
TENSOR_NAME = "face_embeddings"
MAX_SPRITE_SIDE = 8192                 # the projector's WebGL texture limit
METADATA_COLUMNS = (features.LABEL, features.GROUP, features.PATH)


def choose_keys(records: Dict[str, Dict], max_images: int, seed: int = 0) -> List[str]:
    """All keys, or whole identities drawn at random up to `max_images` keys; in list order."""
    keys = list(records)
    if len(keys) <= max_images:
        return keys
    by_identity: Dict[int, List[str]] = {}
    for key in keys:
        by_identity.setdefault(records[key][features.LABEL], []).append(key)
    labels = list(by_identity)
    chosen: set = set()
    for index in np.random.default_rng(seed).permutation(len(labels)):
        members = by_identity[labels[index]]
        if len(chosen) + len(members) <= max_images:      # skip identities that do not fit whole
            chosen.update(members)
    if not chosen:                                        # every identity is larger than the limit
        chosen.update(by_identity[labels[0]][:max_images])
    return [key for key in keys if key in chosen]


def load_embedder(saved_model_dir: str):
    return load_signature(saved_model_dir, EMBED_IMAGES)


def embed_and_crop(signature, records: Dict[str, Dict], keys: Sequence[str], image_root: str,
                   thumbnail: int, batch_size: int):
    """(embeddings float32 [n, d], thumbnails uint8 [n, t, t, 3]), one batch of files at a time."""
    embeddings, thumbnails = [], []
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        image_bytes = tf.constant(read_images(records, chunk, image_root))
        box = {k: tf.constant([records[key][k] for key in chunk], tf.int64)
               for k in preprocessing.BOX_KEYS}
        embeddings.append(signature(image_bytes=image_bytes, **box)["embedding"].numpy())
        crops = preprocessing.crop_faces(image_bytes, tf.stack(list(box.values()), axis=1),
                                         thumbnail)
        thumbnails.append(preprocessing.quantize_crops(crops).numpy())   # as the Transform stores
    return np.concatenate(embeddings).astype(np.float32), np.concatenate(thumbnails)


def sprite_image(thumbnails: np.ndarray) -> Image.Image:
    """Square grid of ceil(sqrt(n)) thumbnails a side, row-major, black where there is none."""
    count, side = len(thumbnails), thumbnails.shape[1]
    grid = math.ceil(math.sqrt(count))
    sheet = np.zeros([grid * side, grid * side, 3], np.uint8)
    for i, thumb in enumerate(thumbnails):
        row, col = divmod(i, grid)
        sheet[row * side:(row + 1) * side, col * side:(col + 1) * side] = thumb
    return Image.fromarray(sheet, "RGB")


def _tsv_field(value) -> str:
    # A tab or newline inside a field would shift every later column or row.
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_projector(out_dir: str, embeddings: np.ndarray, rows: Sequence[Sequence],
                    thumbnails: np.ndarray) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, EMBEDDINGS_FILE), "w") as f:
        for vector in embeddings:
            f.write("\t".join(f"{v:.9g}" for v in vector) + "\n")   # 9 digits: float32 exact
    with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
        f.write("\t".join(METADATA_COLUMNS) + "\n")              # header: more than one column
        for row in rows:
            f.write("\t".join(_tsv_field(v) for v in row) + "\n")
    sprite_image(thumbnails).save(os.path.join(out_dir, SPRITE_FILE))

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.tensor_path = EMBEDDINGS_FILE
    embedding.tensor_shape.extend(list(embeddings.shape))
    embedding.metadata_path = METADATA_FILE
    embedding.sprite.image_path = SPRITE_FILE
    embedding.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])  # w, h
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        f.write(text_format.MessageToString(config))
    return {name: os.path.join(out_dir, name)
            for name in (EMBEDDINGS_FILE, METADATA_FILE, SPRITE_FILE, CONFIG_FILE)}


def project(saved_model_dir: str, list_path: str, image_root: str, out_dir: str,
            max_images: int = 2000, thumbnail: int = 32, batch_size: int = 64) -> Dict:
    """Writes the four files; returns {"images": n, "embedding_size": d, "files": {...}}."""
    if max_images < 1 or thumbnail < 1 or batch_size < 1:
        raise ValueError("--max-images, --thumbnail and --batch-size must be positive")
    records = read_face_list(list_path)
    keys = choose_keys(records, max_images)
    sprite_side = math.ceil(math.sqrt(len(keys))) * thumbnail
    if sprite_side > MAX_SPRITE_SIDE:
        raise ValueError(f"a sprite of {len(keys)} thumbnails of {thumbnail} px is "
                         f"{sprite_side} px a side, over TensorBoard's {MAX_SPRITE_SIDE}; lower "
                         f"--thumbnail or --max-images")
    _, signature = load_embedder(saved_model_dir)
    embeddings, thumbnails = embed_and_crop(signature, records, keys, image_root, thumbnail,
                                            batch_size)
    rows = [(records[key][features.LABEL], group_of(key), key) for key in keys]
    files = write_projector(out_dir, embeddings, rows, thumbnails)
    return {"images": len(keys), "embedding_size": int(embeddings.shape[1]), "files": files}


def main(argv=None) -> int:
    parser = model_tool_parser(__doc__)
    parser.add_argument("--out", required=True, help="output directory (TensorBoard's logdir)")
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--thumbnail", type=int, default=32, help="sprite thumbnail side, pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="images per embed_images call")
    args = parser.parse_args(argv)
    try:
        result = project(args.model, args.list, args.image_root, args.out, args.max_images,
                         args.thumbnail, args.batch_size)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"{result['images']} embeddings of size {result['embedding_size']} in {args.out}; "
          f"view with: tensorboard --logdir {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
