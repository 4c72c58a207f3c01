// Face boxes of the original face-api.js and Human pipelines, for
// ports/derive_npm_face_crops.py (which maps them into the FFHQ frame).
//
//   node ports/npm_face_boxes.mjs request.json
//
// request.json: {"images": "<raw uint8 [N, H, W, 3] file>", "shape": [...],
//   "mode": "faceapi" | "human", "out": "<result json>",
//   faceapi: "ssd_manifest", "landmark_manifest" (weights manifests);
//   human: "human_dist" (dist/human.node-wasm.js of @vladmandic/human),
//          "models_dir" (holding blazeface.json + .bin)}
//
// faceapi: detectAllFaces (SSD MobileNet v1, minConfidence 0.3) then
//   withFaceLandmarks, as face-api's pipeline runs them; per image the
//   highest-scoring face: detection box, alignedRect box (what
//   withFaceExpressions / withAgeAndGender crop) and the 68 landmarks, in
//   pixels of the image.
// human: Human.detect with only the face detector (BlazeFace) enabled and
//   face mesh off: face.boxRaw is then the enlarged, squared detector box
//   that Human cuts face.tensor from (the input of mobilefacenet and gear),
//   as [x, y, w, h] fractions of the image.
// Human's node build resolves @tensorflow/* from NODE_PATH (ports/node_modules).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function readImages(request) {
  const buf = fs.readFileSync(request.images);
  const [n, h, w, c] = request.shape;
  if (buf.byteLength !== n * h * w * c) throw new Error('image file size mismatch');
  return { buf, n, h, w, c };
}

function weightMap(tf, manifestPath) {
  const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  const parts = [];
  const specs = [];
  for (const group of manifest) {
    for (const p of group.paths) parts.push(fs.readFileSync(path.join(path.dirname(manifestPath), p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(parts);
  return tf.io.decodeWeights(all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength), specs);
}

async function faceapiBoxes(request) {
  const tf = require('@tensorflow/tfjs');
  // The WebAssembly backend (what face-api's node-wasm build is for): the
  // SSD detector at 512x512 takes ~30 s an image on the pure-JS backend.
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(path.join(path.dirname(require.resolve(
    '@tensorflow/tfjs-backend-wasm')), path.sep));
  await tf.setBackend('wasm');
  await tf.ready();
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
  faceapi.nets.ssdMobilenetv1.loadFromWeightMap(weightMap(tf, request.ssd_manifest));
  faceapi.nets.faceLandmark68Net.loadFromWeightMap(weightMap(tf, request.landmark_manifest));
  const { buf, n, h, w, c } = readImages(request);
  const options = new faceapi.SsdMobilenetv1Options({ minConfidence: 0.3 });
  const out = [];
  for (let i = 0; i < n; i++) {
    const pixels = new Int32Array(buf.subarray(i * h * w * c, (i + 1) * h * w * c));
    const image = tf.tensor3d(pixels, [h, w, c], 'int32');
    const faces = await faceapi.detectAllFaces(image, options).withFaceLandmarks();
    image.dispose();
    if (!faces.length) { out.push(null); continue; }
    const best = faces.reduce((a, b) => (b.detection.score > a.detection.score ? b : a));
    const box = (b) => [b.x, b.y, b.width, b.height];
    out.push({
      score: best.detection.score,
      detection: box(best.detection.box),
      aligned: box(best.alignedRect.box),
      landmarks: best.landmarks.positions.map((p) => [p.x, p.y]),
    });
  }
  return out;
}

async function humanBoxes(request) {
  // Human fetches its models by URL; serve models_dir on localhost.
  const server = http.createServer((req, res) => {
    const file = path.join(request.models_dir, path.basename(req.url.split('?')[0]));
    if (!fs.existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200);
    res.end(fs.readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}/`;
  // Register the pure-JS CPU backend with the tfjs-core Human resolves.
  createRequire(request.human_dist)('@tensorflow/tfjs-backend-cpu');
  const { Human } = require(request.human_dist);
  const human = new Human({
    backend: 'cpu',
    modelBasePath: base,
    debug: false,
    async: false,
    filter: { enabled: false },
    face: {
      enabled: true,
      detector: { modelPath: 'blazeface.json', rotation: false, maxDetected: 1, return: false },
      mesh: { enabled: false },
      iris: { enabled: false },
      attention: { enabled: false },
      description: { enabled: false },
      emotion: { enabled: false },
      antispoof: { enabled: false },
      liveness: { enabled: false },
    },
    body: { enabled: false },
    hand: { enabled: false },
    object: { enabled: false },
    gesture: { enabled: false },
    segmentation: { enabled: false },
  });
  await human.load();
  const tf = human.tf;
  const { buf, n, h, w, c } = readImages(request);
  const out = [];
  for (let i = 0; i < n; i++) {
    const pixels = new Float32Array(Uint8Array.from(buf.subarray(i * h * w * c, (i + 1) * h * w * c)));
    const image = tf.tensor4d(pixels, [1, h, w, c], 'float32');
    const result = await human.detect(image);
    image.dispose();
    const face = result.face && result.face[0];
    out.push(face ? { score: face.boxScore, boxRaw: face.boxRaw, box: face.box } : null);
  }
  server.close();
  return out;
}

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const out = request.mode === 'human' ? await humanBoxes(request) : await faceapiBoxes(request);
  fs.writeFileSync(request.out, JSON.stringify(out));
}

main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
