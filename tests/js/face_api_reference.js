// Reference outputs of @vladmandic/face-api's own JavaScript, for the parity tests and the benchmark.
//
// Usage:  node face_api_reference.js REQUEST.json
// REQUEST = {"package_dir": "<unpacked npm package>",
//            "jobs": [{"kind": "descriptor" | "landmarks", "tensor": "<raw float32 LE file>",
//                      "shape": [n, h, w, 3], "batch": false}]}
// Prints one JSON object on stdout: {"tfjs_backend": ..., "results": [...]}, one result per job:
//   descriptor: {"descriptors": [[128 floats] x n], "seconds": wall time of the n calls}
//   landmarks:  {"positions": [[[x, y] x 68] x n]}  (pixels of each input tensor, as detectLandmarks
//               returns them), "seconds"
//   align:      photos of different sizes: "shapes": [[h, w, 3] x n] (the tensor file holds them one
//               after the other) and "boxes": [[x1, y1, x2, y2] x n]. For each photo, face-api's own
//               steps: extractFaceTensors(photo, [box]) -> detectLandmarks -> shiftBy(the clipped
//               whole-pixel crop's origin), then "refine_passes" times the same in the landmarks'
//               align() box (alignMinBbox(0.2)) -> align(null, {useDlibAlignment: true}) ->
//               extractFaceTensors(photo, [aligned]) -> NetInput.toBatchTensor(150, true) (what
//               computeFaceDescriptor feeds the network) and computeFaceDescriptor.
//               -> {"landmarks": [[[x, y] x 68] x n] (photo pixels), "boxes": [[x, y, w, h] x n],
//                   "crops": [base64 float32 150 x 150 x 3 x n], "descriptors": [[128] x n], "seconds"}
// With "batch": true the n tensors go to the package in one call (an array input), else one call each.
// The weights are read from the package's model/ folder and handed to loadFromWeightMap through
// tf.io.decodeWeights: nothing is fetched from the network.
'use strict';

const fs = require('fs');
const path = require('path');

const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const faceapi = require(path.join(request.package_dir, 'dist', 'face-api.node-wasm.js'));
const { tf } = faceapi;

function weightMap(modelName) {
  const modelDir = path.join(request.package_dir, 'model');
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, `${modelName}-weights_manifest.json`), 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of manifest) {
    for (const p of group.paths) {
      const buf = fs.readFileSync(path.join(modelDir, p));
      buffers.push(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    }
    specs.push(...group.weights);
  }
  return tf.io.decodeWeights(tf.io.concatenateArrayBuffers(buffers), specs);
}

function readTensors(job) {
  const buf = fs.readFileSync(job.tensor);
  const values = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const [n, h, w, c] = job.shape;
  if (values.length !== n * h * w * c) {
    throw new Error(`${job.tensor}: ${values.length} floats, shape ${job.shape} needs ${n * h * w * c}`);
  }
  const size = h * w * c;
  return Array.from({ length: n }, (_, i) => tf.tensor3d(values.subarray(i * size, (i + 1) * size), [h, w, c]));
}

async function alignJob(job, loaded, nets) {
  loaded.landmarks = loaded.landmarks || nets.landmarks();
  loaded.descriptor = loaded.descriptor || nets.descriptor();
  const buf = fs.readFileSync(job.tensor);
  const values = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const out = { landmarks: [], boxes: [], crops: [], descriptors: [] };
  const start = process.hrtime.bigint();
  let offset = 0;
  for (let i = 0; i < job.shapes.length; i += 1) {
    const [h, w, c] = job.shapes[i];
    const photo = tf.tensor3d(values.subarray(offset, offset + h * w * c), [h, w, c]);
    offset += h * w * c;
    const [x1, y1, x2, y2] = job.boxes[i];
    const box = new faceapi.Box({ left: x1, top: y1, right: x2, bottom: y2 });
    const clipped = box.clipAtImageBorders(w, h);
    const [crop] = await faceapi.extractFaceTensors(photo, [box]);
    let landmarks = (await loaded.landmarks.detectLandmarks(crop)).shiftBy(clipped.x, clipped.y);
    crop.dispose();
    for (let pass = 0; pass < (job.refine_passes || 0); pass += 1) {
      // face-api's own box of these landmarks (align() without options: alignMinBbox(0.2)).
      const refined = landmarks.align();
      const refinedClipped = refined.clipAtImageBorders(w, h);
      const [again] = await faceapi.extractFaceTensors(photo, [refined]);
      landmarks = (await loaded.landmarks.detectLandmarks(again)).shiftBy(refinedClipped.x, refinedClipped.y);
      again.dispose();
    }
    const rect = landmarks.align(null, { useDlibAlignment: true });
    const [face] = await faceapi.extractFaceTensors(photo, [rect]);
    const input = new faceapi.NetInput([face]).toBatchTensor(150, true);
    const descriptor = await loaded.descriptor.computeFaceDescriptor(face);
    out.landmarks.push(landmarks.positions.map((p) => [p.x, p.y]));
    out.boxes.push([rect.x, rect.y, rect.width, rect.height]);
    out.crops.push(Buffer.from(input.dataSync().buffer).toString('base64'));
    out.descriptors.push(Array.from(descriptor));
    [photo, face, input].forEach((t) => t.dispose());
  }
  if (offset !== values.length) throw new Error(`${job.tensor}: ${values.length} floats, shapes need ${offset}`);
  out.seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return out;
}

async function run() {
  await tf.setBackend('cpu');
  await tf.ready();
  const nets = {
    descriptor: () => {
      const net = new faceapi.FaceRecognitionNet();
      net.loadFromWeightMap(weightMap('face_recognition_model'));
      return net;
    },
    landmarks: () => {
      const net = new faceapi.FaceLandmark68Net();
      net.loadFromWeightMap(weightMap('face_landmark_68_model'));
      return net;
    },
  };
  const loaded = {};
  const results = [];
  for (const job of request.jobs) {
    if (job.kind === 'align') {
      results.push(await alignJob(job, loaded, nets));
      continue;
    }
    if (!nets[job.kind]) throw new Error(`unknown job kind ${job.kind}`);
    loaded[job.kind] = loaded[job.kind] || nets[job.kind]();
    const net = loaded[job.kind];
    const tensors = readTensors(job);
    const start = process.hrtime.bigint();
    let outputs;
    if (job.kind === 'descriptor') {
      outputs = job.batch ? await net.computeFaceDescriptor(tensors)
        : await Promise.all(tensors.map((t) => net.computeFaceDescriptor(t)));
    } else {
      outputs = job.batch ? await net.detectLandmarks(tensors)
        : await Promise.all(tensors.map((t) => net.detectLandmarks(t)));
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    tensors.forEach((t) => t.dispose());
    if (job.kind === 'descriptor') {
      results.push({ descriptors: outputs.map((d) => Array.from(d)), seconds });
    } else {
      results.push({ positions: outputs.map((lm) => lm.positions.map((p) => [p.x, p.y])), seconds });
    }
  }
  process.stdout.write(JSON.stringify({ tfjs_backend: tf.getBackend(), results }));
}

run().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
