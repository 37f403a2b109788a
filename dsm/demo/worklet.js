// AudioWorklet: microphone samples at the context's rate -> 24 kHz frames of 1920 samples.
//
// A windowed-sinc low-pass interpolator (cut-off just under the lower Nyquist rate) reads
// the input at fractional positions 24000 / sampleRate apart, so 48 kHz or 44.1 kHz
// microphones both come out clean at 24 kHz. Each full 80 ms frame is posted to the page.

const TARGET_RATE = 24000;
const FRAME_SIZE = 1920;
const HALF_TAPS = 16;

class Resample24k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.cutoff = 0.9 * Math.min(1, TARGET_RATE / sampleRate); // of the input Nyquist
    this.history = new Float32Array(0); // input not yet fully consumed
    this.position = HALF_TAPS; // next output position, in `history` coordinates
    this.frame = new Float32Array(FRAME_SIZE);
    this.filled = 0;
  }

  kernel(distance) {
    if (distance === 0) return this.cutoff;
    const x = Math.PI * distance;
    const window = 0.5 + 0.5 * Math.cos(x / (HALF_TAPS + 1)); // Hann
    return (Math.sin(this.cutoff * x) / x) * window;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const mono = input[0];
    const joined = new Float32Array(this.history.length + mono.length);
    joined.set(this.history);
    joined.set(mono, this.history.length);
    while (this.position + HALF_TAPS < joined.length) {
      const center = Math.floor(this.position);
      let sum = 0;
      for (let k = center - HALF_TAPS + 1; k <= center + HALF_TAPS; k++) {
        sum += joined[k] * this.kernel(this.position - k);
      }
      this.frame[this.filled++] = sum;
      if (this.filled === FRAME_SIZE) {
        this.port.postMessage(this.frame.slice());
        this.filled = 0;
      }
      this.position += this.step;
    }
    const keep = Math.floor(this.position) - HALF_TAPS;
    this.history = joined.slice(keep);
    this.position -= keep;
    return true;
  }
}

registerProcessor("resample-24k", Resample24k);
