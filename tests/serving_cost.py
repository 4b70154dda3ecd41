"""Time and peak memory of one `embed_images` request, measured in a process of its own.

    python -m tests.serving_cost MODEL_DIR bomb   4 decodable PNGs of 14,000 x 14,000 RGB (about
                                                  half a megabyte each) in one request
    python -m tests.serving_cost MODEL_DIR valid  IMAGES valid JPEGs of WIDTH x HEIGHT in one request
                                                  (--images, --width, --height)

Prints one JSON line: seconds, peak_extra_mb (the process's peak resident memory during the request
above its resident memory before it: the kernel's high-water mark, VmHWM, is reset just before the
request by writing 5 to /proc/self/clear_refs), refused (the error text, or null), pixels.
The model is loaded and warmed up with one small valid request first, as a server would be.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tests import image_factory as images  # noqa: E402

BOMB_SIDE = 14_000


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def request(embed, payloads, box):
    columns = {k: tf.constant([v] * len(payloads), tf.int64) for k, v in zip(("x1", "y1", "x2", "y2"),
                                                                             box)}
    return embed(image_bytes=tf.constant(payloads), **columns)


def measure(embed, payloads, box):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    refused = None
    try:
        request(embed, payloads, box)["embedding"].numpy()
    except tf.errors.InvalidArgumentError as error:
        refused = error.message
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_extra_mb": (_status_bytes("VmHWM") - before) / 2 ** 20,
            "refused": refused}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("case", choices=["bomb", "valid"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)
    embed = tf.saved_model.load(args.model_dir).signatures["embed_images"]
    request(embed, [images.jpeg(64, 48)], (4, 5, 40, 45))["embedding"].numpy()   # warm-up
    if args.case == "bomb":     # made before the measurement
        payloads = [images.png_bomb_decodable(BOMB_SIDE, BOMB_SIDE)] * 4
        box, pixels = (10, 10, 500, 500), 4 * BOMB_SIDE * BOMB_SIDE
    else:
        payloads = [images.jpeg(args.width, args.height, seed=i, quality=95)
                    for i in range(args.images)]
        box = (args.width // 4, args.height // 4, args.width * 3 // 4, args.height * 3 // 4)
        pixels = args.images * args.width * args.height
    result = measure(embed, payloads, box)
    print(json.dumps({**result, "pixels": pixels, "bytes": sum(len(p) for p in payloads)}))


if __name__ == "__main__":
    main()
