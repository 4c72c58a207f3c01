// Runs the original TF.js models on fixed inputs: the parity reference of
// the face-api.js and human-models ports (id2image_jax/models/faceapi.py,
// mobilefacenet.py, gear.py).
//
// Pure-JS CPU backend of @tensorflow/tfjs (pinned in ports/package.json),
// offline: the model files are read from disk and handed over in memory.
// face-api.js nets run through face-api.js's own classes (its node build,
// with its weights decoded by tf.io.decodeWeights), so their input
// normalisation and post-processing are face-api's, not ours. Graph models
// load through tf.io.fromMemory + tf.loadGraphModel and run with
// GraphModel.execute.
//
//   npm ci --prefix ports            # once
//   node ports/tfjs_reference.mjs request.json
//
// request.json:
//   {"kind": "faceapi", "variant": "landmark68" | "expression" |
//      "age_gender", "manifest": "<...-weights_manifest.json>",
//    or "kind": "graph", "model": "<model.json>", "outputs": [node names],
//    "input": "<raw little-endian float32 file>", "shape": [B, H, W, 3],
//    "out_dir": "<dir>", "repeat": 0, "warmup": 1, "backend": "cpu"}
// faceapi inputs are pixels on the 0..255 scale (face-api normalises);
// graph inputs are fed as they are. Writes <out_dir>/<name>.f32 (raw
// float32) and <out_dir>/result.json:
//   {"outputs": {name: shape}, "times_ms": [...], "tfjs": version,
//    "backend": "cpu"}
// With repeat > 0 the forward pass is timed that many times after `warmup`
// untimed runs (each ending in dataSync, i.e. all work done): face-api's
// forwardInput (its normalisation, the net and post-processing) or the
// graph's execute for the requested outputs.
//
// "backend": "wasm" runs graph models on the WebAssembly backend instead
// (tfjs-backend-wasm, same version; ~10x faster than pure JS here): for
// measurements on many images, never for the parity tests, whose
// reference stays the pure-JS backend.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const tf = require('@tensorflow/tfjs');

function readFloat32(file, shape) {
  const buf = fs.readFileSync(file);
  const size = shape.reduce((a, b) => a * b, 1);
  if (buf.byteLength !== 4 * size) {
    throw new Error(`${file}: ${buf.byteLength} bytes, shape ${shape} needs ${4 * size}`);
  }
  // Copy into a fresh, aligned ArrayBuffer.
  const data = new Float32Array(size);
  new Uint8Array(data.buffer).set(buf);
  return tf.tensor(data, shape, 'float32');
}

function readShards(dir, groups) {
  // A group's shards are concatenated in order; groups follow each other.
  const parts = [];
  const specs = [];
  for (const group of groups) {
    for (const p of group.paths) parts.push(fs.readFileSync(path.join(dir, p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(parts);
  const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return { specs, data };
}

function faceapiNet(faceapi, variant) {
  const nets = {
    landmark68: () => new faceapi.FaceLandmark68Net(),
    expression: () => new faceapi.FaceExpressionNet(),
    age_gender: () => new faceapi.AgeGenderNet(),
  };
  if (!(variant in nets)) throw new Error(`unknown face-api variant ${variant}`);
  return nets[variant]();
}

async function loadFaceapi(request) {
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
  const manifest = JSON.parse(fs.readFileSync(request.manifest, 'utf8'));
  const { specs, data } = readShards(path.dirname(request.manifest), manifest);
  const net = faceapiNet(faceapi, request.variant);
  net.loadFromWeightMap(tf.io.decodeWeights(data, specs));
  const timed = (x) => {
    const out = net.forwardInput(new faceapi.NetInput(tf.unstack(x)));
    return out.age ? out : { out };
  };
  const all = (x) => {
    // One tensor3d per image, as extractFaceTensors hands them over.
    const input = new faceapi.NetInput(tf.unstack(x));
    if (request.variant === 'age_gender') {
      const raw = net.runNet(input);
      const out = net.forwardInput(input);
      return { age: out.age, gender_probs: out.gender,
               gender_logits: raw.gender };
    }
    if (request.variant === 'expression') {
      return { probs: net.forwardInput(input), logits: net.runNet(input) };
    }
    // forwardInput maps the fc output through postProcess (undoing the
    // padding to a square); runNet is the raw fc output.
    return { landmarks: net.forwardInput(input), raw: net.runNet(input) };
  };
  return { all, timed };
}

async function loadGraph(request) {
  const json = JSON.parse(fs.readFileSync(request.model, 'utf8'));
  const { specs, data } = readShards(path.dirname(request.model), json.weightsManifest);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology,
    weightSpecs: specs,
    weightData: data,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    signature: json.signature,
    userDefinedMetadata: json.userDefinedMetadata,
  }));
  const names = request.outputs;
  const all = (x) => {
    const out = model.execute(x, names);
    const list = Array.isArray(out) ? out : [out];
    return Object.fromEntries(names.map((n, i) => [n, list[i]]));
  };
  return { all, timed: all };
}

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const backend = request.backend || 'cpu';
  if (backend === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(path.join(path.dirname(require.resolve(
      '@tensorflow/tfjs-backend-wasm')), path.sep));
  } else if (backend !== 'cpu') {
    throw new Error(`unknown backend ${backend}: cpu or wasm`);
  }
  await tf.setBackend(backend);
  await tf.ready();
  const x = readFloat32(request.input, request.shape);
  const forward = request.kind === 'faceapi'
    ? await loadFaceapi(request) : await loadGraph(request);
  const run = () => tf.tidy(() => forward.timed(x));
  const syncAll = (outs) => Object.values(outs).forEach((t) => t.dataSync());

  const outs = tf.tidy(() => forward.all(x));
  syncAll(outs);
  fs.mkdirSync(request.out_dir, { recursive: true });
  const shapes = {};
  for (const [name, t] of Object.entries(outs)) {
    const safe = name.replace(/[^A-Za-z0-9_.-]/g, '_');
    const values = Float32Array.from(t.dataSync());
    fs.writeFileSync(path.join(request.out_dir, `${safe}.f32`), Buffer.from(values.buffer));
    shapes[name] = { shape: t.shape, file: `${safe}.f32` };
  }
  tf.dispose(outs);

  const times = [];
  const repeat = request.repeat || 0;
  for (let i = 0; i < (repeat ? request.warmup ?? 1 : 0); i++) {
    const o = run(); syncAll(o); tf.dispose(o);
  }
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    const o = run(); syncAll(o);
    times.push(performance.now() - t0);
    tf.dispose(o);
  }
  fs.writeFileSync(path.join(request.out_dir, 'result.json'), JSON.stringify({
    outputs: shapes, times_ms: times, tfjs: tf.version.tfjs, backend: tf.getBackend(),
  }, null, 1));
}

main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
