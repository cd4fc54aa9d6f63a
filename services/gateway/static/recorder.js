// Microphone capture: MediaRecorder for the file, an AnalyserNode for the live level, a hard stop at the limit.

import { ApiError } from "./api.js";

const PREFERRED_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"];

export function pickMimeType() {
  if (typeof MediaRecorder === "undefined") return null;
  return PREFERRED_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) ?? "";
}

export class Recorder {
  // onLevel(0..1), onTick(elapsedSeconds) are called while recording; stop() resolves with {blob, seconds}.
  constructor({ maxSeconds, onLevel, onTick }) {
    this.maxSeconds = maxSeconds;
    this.onLevel = onLevel;
    this.onTick = onTick;
    this.active = false;
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || pickMimeType() === null) {
      throw new ApiError("mic_unsupported", "MediaRecorder or getUserMedia is missing.");
    }
    try {
      // Raw sound: echo cancellation and noise suppression would erase the very sounds people look for.
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError") throw new ApiError("mic_denied", err.message);
      if (name === "NotFoundError" || name === "OverconstrainedError") throw new ApiError("mic_missing", err.message);
      throw new ApiError("mic_error", String(err && err.message ? err.message : err));
    }
    const mimeType = pickMimeType();
    this.recorder = new MediaRecorder(this.stream, mimeType ? { mimeType } : undefined);
    this.chunks = [];
    this.recorder.addEventListener("dataavailable", (e) => e.data && e.data.size && this.chunks.push(e.data));
    this.stopped = new Promise((resolve) => this.recorder.addEventListener("stop", resolve, { once: true }));

    this.ctx = new AudioContext();
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    source.connect(this.analyser);
    this.buffer = new Float32Array(this.analyser.fftSize);

    this.recorder.start(250);
    this.startedAt = performance.now();
    this.active = true;
    this._frame();
  }

  elapsed() {
    return this.active ? (performance.now() - this.startedAt) / 1000 : this.seconds ?? 0;
  }

  _frame() {
    if (!this.active) return;
    this.analyser.getFloatTimeDomainData(this.buffer);
    let peak = 0;
    let sum = 0;
    for (const v of this.buffer) {
      sum += v * v;
      peak = Math.max(peak, Math.abs(v));
    }
    const rms = Math.sqrt(sum / this.buffer.length);
    // -60 dBFS .. 0 dBFS mapped to 0..1 (a meter that shows quiet sounds too).
    const db = 20 * Math.log10(Math.max(rms, 1e-6));
    this.onLevel?.(Math.min(1, Math.max(0, (db + 60) / 60)), peak);
    const t = this.elapsed();
    this.onTick?.(t);
    if (t >= this.maxSeconds) {
      this.stop();
      return;
    }
    this.raf = requestAnimationFrame(() => this._frame());
  }

  async stop() {
    if (!this.active) return this.result;
    this.active = false;
    this.seconds = Math.min((performance.now() - this.startedAt) / 1000, this.maxSeconds);
    cancelAnimationFrame(this.raf);
    if (this.recorder.state !== "inactive") this.recorder.stop();
    await this.stopped;
    this.stream.getTracks().forEach((t) => t.stop());
    this.ctx.close();
    this.onLevel?.(0, 0);
    const type = (this.recorder.mimeType || this.chunks[0]?.type || "audio/webm").split(";")[0];
    this.result = { blob: new Blob(this.chunks, { type }), seconds: this.seconds, type };
    this.onDone?.(this.result);
    return this.result;
  }
}
