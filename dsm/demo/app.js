// dsm demo page: live captions from the microphone, and streaming speech from text.
// Speaks Kyutai's protocol (msgpack maps with a "type") to the server that served it.
//
// URL parameters: auth_id=KEY (passed on to the websockets), autostart=1 (start the
// microphone at load, for headless tests), speak=TEXT (speak it at load).

"use strict";

// --- a small msgpack codec (the subset the protocol uses) ------------------------------

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

function packInto(out, value) {
  if (value === null || value === undefined) {
    out.push(0xc0);
  } else if (typeof value === "boolean") {
    out.push(value ? 0xc3 : 0xc2);
  } else if (typeof value === "number") {
    if (Number.isInteger(value) && value >= 0 && value < 0x80) {
      out.push(value);
    } else if (Number.isInteger(value) && Math.abs(value) < 2 ** 31) {
      out.push(0xd2, (value >>> 24) & 255, (value >>> 16) & 255, (value >>> 8) & 255, value & 255);
    } else {
      const bytes = new Uint8Array(8);
      new DataView(bytes.buffer).setFloat64(0, value);
      out.push(0xcb, ...bytes);
    }
  } else if (typeof value === "string") {
    const bytes = utf8.encode(value);
    if (bytes.length < 32) out.push(0xa0 | bytes.length);
    else out.push(0xdb, (bytes.length >>> 24) & 255, (bytes.length >>> 16) & 255,
      (bytes.length >>> 8) & 255, bytes.length & 255);
    for (const b of bytes) out.push(b);
  } else if (value instanceof Float32Array) {
    const n = value.length;
    out.push(0xdd, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
    const item = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < n; i++) {
      item.setFloat32(0, value[i]);
      out.push(0xca, item.getUint8(0), item.getUint8(1), item.getUint8(2), item.getUint8(3));
    }
  } else if (typeof value === "object") {
    const keys = Object.keys(value);
    out.push(0x80 | keys.length);
    for (const key of keys) {
      packInto(out, key);
      packInto(out, value[key]);
    }
  } else {
    throw new Error("cannot pack " + typeof value);
  }
}

function pack(value) {
  const out = [];
  packInto(out, value);
  return new Uint8Array(out);
}

function unpack(buffer) {
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  let at = 0;
  function str(n) { const s = utf8d.decode(bytes.subarray(at, at + n)); at += n; return s; }
  function arr(n) { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = read(); return a; }
  function map(n) { const m = {}; for (let i = 0; i < n; i++) { const k = read(); m[k] = read(); } return m; }
  function read() {
    const t = bytes[at++];
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 256;
    if ((t & 0xf0) === 0x80) return map(t & 0x0f);
    if ((t & 0xf0) === 0x90) return arr(t & 0x0f);
    if ((t & 0xe0) === 0xa0) return str(t & 0x1f);
    let v;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xca: v = view.getFloat32(at); at += 4; return v;
      case 0xcb: v = view.getFloat64(at); at += 8; return v;
      case 0xcc: return bytes[at++];
      case 0xcd: v = view.getUint16(at); at += 2; return v;
      case 0xce: v = view.getUint32(at); at += 4; return v;
      case 0xcf: v = Number(view.getBigUint64(at)); at += 8; return v;
      case 0xd0: return view.getInt8(at++);
      case 0xd1: v = view.getInt16(at); at += 2; return v;
      case 0xd2: v = view.getInt32(at); at += 4; return v;
      case 0xd3: v = Number(view.getBigInt64(at)); at += 8; return v;
      case 0xd9: return str(bytes[at++]);
      case 0xda: v = view.getUint16(at); at += 2; return str(v);
      case 0xdb: v = view.getUint32(at); at += 4; return str(v);
      case 0xdc: v = view.getUint16(at); at += 2; return arr(v);
      case 0xdd: v = view.getUint32(at); at += 4; return arr(v);
      case 0xde: v = view.getUint16(at); at += 2; return map(v);
      case 0xdf: v = view.getUint32(at); at += 4; return map(v);
      default: throw new Error("unsupported msgpack byte 0x" + t.toString(16));
    }
  }
  return read();
}

// --- page state -----------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const authId = params.get("auth_id");
const $ = (id) => document.getElementById(id);

function endpoint(path, extra) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (authId) url.searchParams.set("auth_id", authId);
  for (const [k, v] of Object.entries(extra || {})) url.searchParams.set(k, v);
  return url.toString();
}

function setStatus(id, text) {
  $(id).textContent = text;
}

// --- live captions ----------------------------------------------------------------------

let mic = null; // {ws, context, stream}
const micStats = { framesSent: 0, lastRms: 0, inputRate: 0 };
window.dsmMicStats = micStats; // read by the headless browser test

async function startMic() {
  if (mic) return;
  setStatus("mic-status", "starting the microphone…");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule("worklet.js");
  const source = context.createMediaStreamSource(stream);
  const resampler = new AudioWorkletNode(context, "resample-24k");
  const ws = new WebSocket(endpoint("api/asr-streaming"));
  ws.binaryType = "arraybuffer";
  mic = { ws, context, stream };
  let framesSent = 0;
  resampler.port.onmessage = (event) => {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(pack({ type: "Audio", pcm: event.data }));
      framesSent++;
      let energy = 0;
      for (const x of event.data) energy += x * x;
      micStats.framesSent = framesSent;
      micStats.lastRms = Math.sqrt(energy / event.data.length);
    }
  };
  micStats.inputRate = context.sampleRate;
  ws.onopen = () => setStatus("mic-status", `listening (${context.sampleRate} Hz → 24000 Hz)`);
  ws.onmessage = (event) => {
    const message = unpack(event.data);
    if (message.type === "Word") {
      const word = document.createElement("span");
      word.className = "word";
      word.textContent = message.text;
      word.dataset.start = message.start_time.toFixed(2);
      $("captions").append(word, " ");
    } else if (message.type === "Step") {
      $("mic-steps").textContent = `${message.step_idx + 1} steps, ${framesSent} frames sent`;
    } else if (message.type === "Error") {
      setStatus("mic-status", "server error: " + message.message);
    }
  };
  ws.onclose = (event) => {
    setStatus("mic-status", `stopped (close code ${event.code}${event.reason ? ": " + event.reason : ""})`);
    stopMic();
  };
  source.connect(resampler);
  // the worklet only runs when connected to the output; it writes nothing there
  resampler.connect(context.destination);
  $("mic-button").textContent = "Stop microphone";
}

function stopMic() {
  if (!mic) return;
  const { ws, context, stream } = mic;
  mic = null;
  if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  stream.getTracks().forEach((t) => t.stop());
  context.close();
  $("mic-button").textContent = "Start microphone";
}

// --- streaming speech -------------------------------------------------------------------

async function speak(text) {
  const words = text.split(/\s+/).filter((w) => w);
  if (words.length === 0) return;
  const context = new AudioContext({ sampleRate: 24000 });
  await context.resume();
  const ws = new WebSocket(endpoint("api/tts_streaming", { format: "PcmMessagePack" }));
  ws.binaryType = "arraybuffer";
  let playAt = 0;
  let frames = 0;
  const started = performance.now();
  $("spoken").textContent = "";
  setStatus("tts-status", "connecting…");
  ws.onopen = () => {
    for (const word of words) ws.send(pack({ type: "Text", text: word + " " }));
    ws.send(pack({ type: "Eos" }));
  };
  ws.onmessage = (event) => {
    const message = unpack(event.data);
    if (message.type === "Audio") {
      const pcm = Float32Array.from(message.pcm);
      const buffer = context.createBuffer(1, pcm.length, 24000);
      buffer.copyToChannel(pcm, 0);
      const node = context.createBufferSource();
      node.buffer = buffer;
      node.connect(context.destination);
      playAt = Math.max(playAt, context.currentTime + 0.05);
      node.start(playAt); // frames play back to back as they arrive
      playAt += buffer.duration;
      frames++;
      if (frames === 1) $("first-audio").textContent = `first audio after ${Math.round(performance.now() - started)} ms`;
      setStatus("tts-status", `playing: ${frames} frames (${(frames * 0.08).toFixed(2)} s)`);
    } else if (message.type === "Text") {
      const word = document.createElement("span");
      word.className = "word";
      word.textContent = message.text;
      word.dataset.start = message.start_s.toFixed(2);
      $("spoken").append(word, " ");
    } else if (message.type === "Error") {
      setStatus("tts-status", "server error: " + message.message);
    }
  };
  ws.onclose = (event) => {
    $("tts-status").dataset.done = "1";
    setStatus("tts-status", `done: ${frames} frames (${(frames * 0.08).toFixed(2)} s), close code ${event.code}`);
  };
}

// --- wiring -----------------------------------------------------------------------------

$("mic-button").addEventListener("click", () => (mic ? stopMic() : startMic().catch(
  (error) => setStatus("mic-status", "microphone failed: " + error))));
$("speak-button").addEventListener("click", () => speak($("text").value).catch(
  (error) => setStatus("tts-status", "speech failed: " + error)));

if (params.get("autostart")) startMic().catch((error) => setStatus("mic-status", "microphone failed: " + error));
if (params.get("speak")) {
  $("text").value = params.get("speak");
  speak(params.get("speak")).catch((error) => setStatus("tts-status", "speech failed: " + error));
}
