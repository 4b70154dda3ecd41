"""The embedded sample data set: procedural face-like images with true bounding boxes.

The CLI is `python -m tools.make_sample_data --out data/sample --seed 0`; the local runner calls
`ensure_sample_data` before a run on the default data root.

Writes `<out>/images/<group>/<identity>/<n>.jpg`, `<out>/train.json` (seen identities) and
`<out>/test.json` (unseen identities) in the original's format:
`{"<group>/<identity>/<n>.jpg": {"label": 0, "x1": .., "y1": .., "x2": .., "y2": ..}, ...}`,
keys relative to `<out>/images`, labels 0..N-1 in each file, box = face extent in pixels.

Each identity has fixed facial geometry, colouring and features (hair, eyes, brows, nose, mouth,
ears, optional beard/glasses/mole). Each image of it varies pose (yaw, roll), scale, position on a
larger canvas, expression, lighting (brightness, colour cast, side light), background clutter, noise
and JPEG quality. The four groups differ like real demographic groups do in face data sets: fewer
training identities, narrower variation between identities and darker, lower-contrast captures make
some groups harder than others. Deterministic for a seed (every image has its own seeded generator,
so parallel generation gives the same bytes).
"""
from __future__ import annotations

import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core import features
from pipeline import configs


@dataclass(frozen=True)
class GroupStyle:
    """How identities of one group are drawn. `spread` scales identity-to-identity variation."""
    share: float                      # fraction of identities (train and test)
    skin: Tuple[int, int, int]        # mean skin colour
    skin_spread: float                # std of skin colour between identities
    spread: float                     # geometry variation between identities (1 = widest)
    hair_colours: Tuple[Tuple[int, int, int], ...]
    exposure: float                   # mean brightness of captures (darker = harder)
    noise: float                      # mean sensor noise std


# Neutral group names; "north" is the easiest group and "west" the hardest.
GROUPS: Dict[str, GroupStyle] = {
    "north": GroupStyle(0.34, (226, 192, 168), 22.0, 1.00,
                        ((40, 30, 25), (120, 80, 40), (200, 170, 110), (150, 60, 30), (90, 90, 90)),
                        1.00, 4.0),
    "south": GroupStyle(0.26, (180, 132, 98), 14.0, 0.75,
                        ((30, 25, 20), (70, 45, 30), (110, 70, 40)), 0.90, 6.0),
    "east": GroupStyle(0.22, (214, 178, 138), 9.0, 0.55, ((20, 18, 18), (45, 35, 30)), 0.88, 7.0),
    "west": GroupStyle(0.18, (112, 78, 58), 8.0, 0.45, ((15, 12, 12), (35, 28, 25)), 0.70, 10.0),
}


@dataclass(frozen=True)
class Identity:
    group: str
    name: str
    aspect: float          # face width / height
    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    hair_style: int        # 0 short, 1 long, 2 bald, 3 fringe
    hairline: float        # angle of the hairline chord (degrees)
    eye_y: float           # eye height, fraction of face height from the top
    eye_gap: float         # half distance between eyes, fraction of face width
    eye_size: float
    iris: Tuple[float, float, float]
    brow_thickness: float
    brow_tilt: float
    brow_lift: float
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    lips: Tuple[float, float, float]
    ear_size: float
    beard: bool
    glasses: bool
    mole: Tuple[float, float] | None


def _colour(rng, mean, spread) -> Tuple[float, float, float]:
    return tuple(float(np.clip(m + rng.normal(0, spread), 0, 255)) for m in mean)


def make_identity(group: str, name: str, rng: np.random.Generator) -> Identity:
    style = GROUPS[group]
    s = style.spread

    def around(mean, half_range):
        return float(mean + rng.uniform(-half_range, half_range) * s)

    hair = style.hair_colours[rng.integers(len(style.hair_colours))]
    return Identity(
        group=group, name=name,
        aspect=around(0.78, 0.10),
        skin=_colour(rng, style.skin, style.skin_spread),
        hair=_colour(rng, hair, 12.0),
        hair_style=int(rng.integers(4)),
        hairline=around(28, 16),
        eye_y=around(0.42, 0.06),
        eye_gap=around(0.21, 0.05),
        eye_size=around(0.085, 0.025),
        iris=_colour(rng, ((60, 40, 25), (40, 90, 140), (70, 110, 60), (30, 25, 20))[
            rng.integers(4)], 10.0),
        brow_thickness=around(0.035, 0.02),
        brow_tilt=around(0.0, 0.12),
        brow_lift=around(0.085, 0.03),
        nose_length=around(0.17, 0.06),
        nose_width=around(0.09, 0.04),
        mouth_y=around(0.76, 0.05),
        mouth_width=around(0.20, 0.07),
        lips=_colour(rng, (170, 80, 80), 25.0),
        ear_size=around(0.14, 0.05),
        beard=bool(rng.random() < 0.25),
        glasses=bool(rng.random() < 0.2),
        mole=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(0.45, 0.8)))
        if rng.random() < 0.3 else None,
    )


def _shade(colour, factor):
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _draw_face(ident: Identity, face_h: float, yaw: float, smile: float, eye_open: float,
               supersample: int = 2) -> Tuple[Image.Image, Image.Image]:
    """Draws the face on a transparent square layer. Returns (RGBA layer, face-region mask)."""
    k = supersample
    fh = face_h * k
    fw = fh * ident.aspect * (1.0 - 0.25 * abs(yaw))
    side = int(fh * 1.9)
    cx, cy = side / 2, side / 2
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    top, bottom, left, right = cy - fh / 2, cy + fh / 2, cx - fw / 2, cx + fw / 2
    shift = yaw * fw * 0.28          # features slide towards the side the face turns to
    hair = tuple(int(c) for c in ident.hair)
    skin = tuple(int(c) for c in ident.skin)

    if ident.hair_style == 1:        # long hair behind the head
        draw.ellipse((left - 0.14 * fw, top - 0.10 * fh, right + 0.14 * fw, bottom + 0.12 * fh),
                     fill=hair + (255,))
    ear_w, ear_h = ident.ear_size * fw, ident.ear_size * fh * 1.6
    ear_y = top + ident.eye_y * fh + 0.05 * fh
    for sign in (-1, 1):
        visible = 1.0 - max(0.0, sign * yaw) * 1.5
        if visible > 0.2:
            ex = cx + sign * fw / 2 + shift * 0.3
            draw.ellipse((ex - ear_w * visible / 2, ear_y - ear_h / 2, ex + ear_w * visible / 2,
                          ear_y + ear_h / 2), fill=_shade(skin, 0.9) + (255,))
    draw.ellipse((left, top, right, bottom), fill=skin + (255,))
    ImageDraw.Draw(mask).ellipse((left, top, right, bottom), fill=255)
    if ident.hair_style != 2:        # hair cap above the hairline
        angle = ident.hairline if ident.hair_style != 3 else ident.hairline * 0.45
        draw.chord((left - 0.04 * fw, top - 0.06 * fh, right + 0.04 * fw, bottom),
                   180 + angle, 360 - angle, fill=hair + (255,))
    if ident.beard:
        draw.chord((left + 0.03 * fw, top + 0.25 * fh, right - 0.03 * fw, bottom + 0.01 * fh),
                   25, 155, fill=_shade(hair, 1.1) + (230,))

    eye_y = top + ident.eye_y * fh
    eye_r = ident.eye_size * fw
    for sign in (-1, 1):
        scale = 1.0 - 0.35 * max(0.0, sign * yaw)   # the far eye looks smaller
        ex = cx + sign * ident.eye_gap * fw + shift
        rx, ry = eye_r * scale, eye_r * 0.6 * eye_open
        draw.ellipse((ex - rx, eye_y - ry, ex + rx, eye_y + ry), fill=(240, 240, 235, 255))
        ir = min(rx, eye_r * 0.55)
        iris = tuple(int(c) for c in ident.iris)
        draw.ellipse((ex - ir * 0.8, eye_y - min(ir, ry), ex + ir * 0.8, eye_y + min(ir, ry)),
                     fill=iris + (255,))
        draw.ellipse((ex - ir * 0.3, eye_y - ir * 0.3, ex + ir * 0.3, eye_y + ir * 0.3),
                     fill=(10, 10, 10, 255))
        by = eye_y - ident.brow_lift * fh
        bx0, bx1 = ex - rx * 1.2, ex + rx * 1.2
        tilt = ident.brow_tilt * fh * sign
        draw.line((bx0, by + tilt, bx1, by - tilt), fill=_shade(hair, 0.9) + (255,),
                  width=max(1, int(ident.brow_thickness * fh)))
        if ident.glasses:
            draw.ellipse((ex - rx * 1.6, eye_y - rx * 1.3, ex + rx * 1.6, eye_y + rx * 1.3),
                         outline=(20, 20, 20, 255), width=max(1, int(0.012 * fh)))
    if ident.glasses:
        draw.line((cx - ident.eye_gap * fw + eye_r * 1.6 + shift, eye_y,
                   cx + ident.eye_gap * fw - eye_r * 1.6 + shift, eye_y),
                  fill=(20, 20, 20, 255), width=max(1, int(0.012 * fh)))

    nose_top = eye_y + 0.04 * fh
    nose_bottom = nose_top + ident.nose_length * fh
    nx = cx + shift * 1.2
    draw.polygon(((nx, nose_top), (nx - ident.nose_width * fw / 2, nose_bottom),
                  (nx + ident.nose_width * fw / 2, nose_bottom)), fill=_shade(skin, 0.78) + (255,))
    my = top + ident.mouth_y * fh
    mw = ident.mouth_width * fw * (1.0 - 0.3 * abs(yaw))
    mx = cx + shift
    curve = (0.03 + 0.05 * smile) * fh
    draw.chord((mx - mw / 2, my - curve, mx + mw / 2, my + curve), 0, 180,
               fill=tuple(int(c) for c in ident.lips) + (255,))
    if ident.mole is not None:
        mole_x = cx + ident.mole[0] * fw + shift
        mole_y = top + ident.mole[1] * fh
        r = 0.018 * fh
        draw.ellipse((mole_x - r, mole_y - r, mole_x + r, mole_y + r), fill=(50, 30, 25, 255))

    size = (side // k, side // k)
    return layer.resize(size, Image.LANCZOS), mask.resize(size, Image.BILINEAR)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    base = rng.uniform(20, 235, size=3)
    direction = rng.uniform(-60, 60, size=3)
    ramp = np.linspace(-0.5, 0.5, width)[None, :, None] * direction[None, None, :]
    pixels = np.clip(base[None, None, :] + ramp + np.zeros((height, 1, 1)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):     # clutter
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        colour = tuple(int(c) for c in rng.uniform(0, 255, size=3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 2.0))))


def render_image(ident: Identity, rng: np.random.Generator) -> Tuple[bytes, Tuple[int, int, int, int]]:
    """One capture of `ident`: JPEG bytes and the face box (x1, y1, x2, y2) in pixels."""
    style = GROUPS[ident.group]
    width, height = int(rng.integers(96, 161)), int(rng.integers(96, 161))
    face_h = float(rng.uniform(0.45, 0.75) * min(width, height))
    layer, mask = _draw_face(ident, face_h, yaw=float(rng.uniform(-0.5, 0.5)),
                             smile=float(rng.uniform(0, 1)), eye_open=float(rng.uniform(0.5, 1.0)))
    roll = float(rng.uniform(-22, 22))
    layer = layer.rotate(roll, resample=Image.BICUBIC)
    mask = mask.rotate(roll, resample=Image.BILINEAR)
    canvas = _background(rng, width, height)
    face_x0, face_y0, face_x1, face_y1 = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    # Place the face so that its box lies fully inside the canvas.
    px = int(rng.integers(-face_x0, max(-face_x0, width - face_x1) + 1))
    py = int(rng.integers(-face_y0, max(-face_y0, height - face_y1) + 1))
    canvas.paste(layer, (px, py), layer)
    box = (max(0, px + face_x0), max(0, py + face_y0), min(width, px + face_x1),
           min(height, py + face_y1))

    pixels = np.asarray(canvas, dtype=np.float32)
    exposure = style.exposure * float(rng.uniform(0.55, 1.35))
    cast = rng.uniform(0.75, 1.25, size=3)
    side_light = float(rng.uniform(-0.45, 0.45))
    ramp = 1.0 + side_light * np.linspace(-1, 1, width)[None, :, None]
    pixels = pixels * exposure * cast[None, None, :] * ramp
    pixels += rng.normal(0, style.noise * float(rng.uniform(0.3, 1.8)), size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(40, 96)))
    return buffer.getvalue(), box


def _identity_counts(total: int) -> Dict[str, int]:
    counts = {g: max(1, int(round(total * style.share))) for g, style in GROUPS.items()}
    counts[max(counts, key=counts.get)] += total - sum(counts.values())
    return counts


def _plan(seed: int, split_code: int, prefix: str,
          identities: int) -> List[Tuple[Identity, int, List[int]]]:
    """(identity, label, seed path) for every identity of a list; labels are 0..N-1."""
    plan = []
    for group, count in _identity_counts(identities).items():
        for i in range(count):
            label = len(plan)
            seed_path = [seed, split_code, label]
            plan.append((make_identity(group, f"{prefix}{i:04d}", np.random.default_rng(seed_path)),
                         label, seed_path))
    return plan


def _render_identity(job) -> List[Tuple[str, Tuple[int, int, int, int]]]:
    ident, images_per_identity, seed_path, image_root = job
    written = []
    folder = os.path.join(image_root, ident.group, ident.name)
    os.makedirs(folder, exist_ok=True)
    for n in range(images_per_identity):
        data, box = render_image(ident, np.random.default_rng(seed_path + [n]))
        key = f"{ident.group}/{ident.name}/{n:02d}.jpg"
        with open(os.path.join(image_root, key), "wb") as f:
            f.write(data)
        written.append((key, box))
    return written


def generate(out: str, seed: int = 0, train_identities: int = 160, train_images: int = 12,
             test_identities: int = 100, test_images: int = 6, workers: int = 0,
             progress: bool = True) -> Dict[str, int]:
    """Writes the data set under `out`. Returns the number of images per list file."""
    if test_images < 4:
        raise ValueError("test identities need at least 4 images each (Recall@K needs a gallery)")
    from tqdm import tqdm

    image_root = os.path.join(out, "images")
    os.makedirs(image_root, exist_ok=True)
    counts = {}
    for split_code, (list_name, prefix, identities, images) in enumerate(
            (("train.json", "id", train_identities, train_images),
             ("test.json", "unseen", test_identities, test_images))):
        plan = _plan(seed, split_code, prefix, identities)
        jobs = [(ident, images, seed_path, image_root) for ident, _, seed_path in plan]
        workers = workers or min(4, os.cpu_count() or 1)
        bar = tqdm(total=len(jobs) * images, desc=f"{list_name}", unit="img", disable=not progress,
                   file=sys.stderr)
        entries = {}
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for (ident, label, _), written in zip(plan, pool.map(_render_identity, jobs,
                                                                 chunksize=4)):
                for key, (x1, y1, x2, y2) in written:
                    entries[key] = {features.LABEL: label, **dict(zip(features.BOX_KEYS, (x1, y1, x2, y2)))}
                bar.update(len(written))
        bar.close()
        tmp = os.path.join(out, list_name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(entries, f, indent=1)
        os.replace(tmp, os.path.join(out, list_name))   # the list appears only when complete
        counts[list_name] = len(entries)
    return counts


def ensure_sample_data(config: configs.PipelineConfig, seed: int, say=print) -> None:
    """Generates the sample data when `config` uses the default data root and its
    lists are missing; `say` tells the user (a console line)."""
    if config.ingest.data_root != configs.SAMPLE_DATA_DIR:
        return
    lists = [os.path.join(config.ingest.data_root, p) for p in config.ingest.list_files.values()]
    if all(os.path.exists(p) for p in lists):
        return
    say(f"Generating the sample data in {config.ingest.data_root} ...")
    generate(config.ingest.data_root, seed=seed)
