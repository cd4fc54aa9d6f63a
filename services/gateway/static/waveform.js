// Decoding and drawing: the peaks of a clip on a canvas, with the matched region highlighted.

let sharedContext = null;
function audioContext() {
  // An OfflineAudioContext decodes without needing a user gesture.
  sharedContext ??= new OfflineAudioContext(1, 1, 44100);
  return sharedContext;
}

export async function decode(arrayBuffer) {
  return audioContext().decodeAudioData(arrayBuffer.slice(0));
}

export function peaks(buffer, columns) {
  const data = buffer.getChannelData(0);
  const out = new Float32Array(columns);
  const step = data.length / columns;
  for (let c = 0; c < columns; c++) {
    let max = 0;
    const end = Math.min(data.length, Math.floor((c + 1) * step));
    for (let i = Math.floor(c * step); i < end; i++) max = Math.max(max, Math.abs(data[i]));
    out[c] = max;
  }
  const top = out.reduce((a, b) => Math.max(a, b), 0) || 1;
  return out.map((v) => v / top);
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

// Draws bars; region = [start, end] seconds; cursor = playhead seconds (or null).
export function draw(canvas, bars, duration, region, cursor = null) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 72;
  if (canvas.width !== Math.round(width * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const x = (s) => (duration > 0 ? (s / duration) * width : 0);
  if (region) {
    const [a, b] = region;
    g.fillStyle = cssVar("--match-bg", "rgba(255,176,32,0.18)");
    g.fillRect(x(a), 0, Math.max(2, x(b) - x(a)), height);
    g.fillStyle = cssVar("--match", "#ffb020");
    g.fillRect(x(a), 0, 2, height);
  }
  const n = bars.length;
  const bw = width / n;
  const mid = height / 2;
  const wave = cssVar("--wave", "#6b7a90");
  const hot = cssVar("--match", "#ffb020");
  for (let i = 0; i < n; i++) {
    const t = ((i + 0.5) / n) * duration;
    const inRegion = region && t >= region[0] && t <= region[1];
    g.fillStyle = inRegion ? hot : wave;
    const h = Math.max(1, bars[i] * (height - 6));
    g.fillRect(i * bw + 0.5, mid - h / 2, Math.max(1, bw - 1), h);
  }
  if (cursor != null && duration > 0) {
    g.fillStyle = cssVar("--text", "#fff");
    g.fillRect(x(cursor) - 0.5, 0, 1.5, height);
  }
}
