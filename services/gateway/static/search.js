// The Search tab: record or drop a sound, POST /v1/searches, poll the job, show the stages and the matches.

import { ApiError, getJSON, request, sleep } from "./api.js";
import { clearError, explain, showError } from "./messages.js";
import { Recorder } from "./recorder.js";
import { decode, draw, peaks } from "./waveform.js";

const STAGES = ["uploading", "queued", "embedding", "searching", "checking", "done"];
const STAGE_TEXT = {
  uploading: "Uploading your sound…",
  queued: "Waiting for a worker…",
  embedding: "Listening to your sound…",
  searching: "Searching the library…",
  checking: "Checking the videos are still online…",
};
const POLL_MS = 400;
const SEARCH_TIMEOUT_MS = 180_000;
const WAVEFORM_MAX_BYTES = 40 * 1024 * 1024;

const $ = (id) => document.getElementById(id);

export function timecode(seconds, decimals = 1) {
  const s = Math.max(0, Number(seconds) || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = (s % 60).toFixed(decimals).padStart(decimals ? 3 + decimals : 2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

export class SearchPanel {
  constructor(config) {
    this.config = config;
    this.generation = 0;
    this.queryDuration = null;
    this.els = {
      record: $("record-btn"),
      choose: $("choose-btn"),
      file: $("file-input"),
      drop: $("dropzone"),
      meter: $("meter"),
      meterFill: $("meter-fill"),
      elapsed: $("rec-elapsed"),
      limitFill: $("limit-fill"),
      statusCard: $("status-card"),
      stages: $("stages"),
      queryName: $("query-name"),
      queryDuration: $("query-duration"),
      queryAudio: $("query-audio"),
      textForm: $("text-form"),
      textQuery: $("text-query"),
      textClasses: $("text-classes"),
      live: $("search-status"),
      error: $("search-error"),
      section: $("results-section"),
      results: $("results"),
      meta: $("results-meta"),
      partial: $("partial-note"),
      template: $("result-template"),
    };
    this.bind();
  }

  bind() {
    const { record, choose, file, drop, textForm, textQuery } = this.els;
    if (this.config.max_text_chars) textQuery.maxLength = this.config.max_text_chars;
    // A form: Enter in the box submits it, as does the button.
    textForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = textQuery.value.trim();
      if (!text) {
        showError(this.els.error, new ApiError("validation_error", "Type a description of the sound first."), this.config);
        textQuery.focus();
        return;
      }
      this.search(null, `“${text}”`, null, text);
    });
    record.addEventListener("click", () => this.toggleRecording());
    choose.addEventListener("click", () => file.click());
    file.addEventListener("change", () => {
      if (file.files && file.files[0]) this.search(file.files[0], file.files[0].name);
      file.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (e) => {
        e.preventDefault();
        drop.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("dragging"));
    }
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) this.search(f, f.name);
    });
    // Dropping a file anywhere on the Search tab works too, without the browser opening it.
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f && !drop.contains(e.target) && !$("panel-search").hidden) this.search(f, f.name);
    });
  }

  // ---------- recording ----------
  async toggleRecording() {
    if (this.recorder && this.recorder.active) {
      await this.recorder.stop();
      return;
    }
    clearError(this.els.error);
    const max = this.config.max_query_s;
    this.recorder = new Recorder({
      maxSeconds: max,
      onLevel: (level) => {
        this.els.meterFill.style.transform = `scaleX(${level.toFixed(3)})`;
        this.els.meterFill.classList.toggle("hot", level > 0.92);
        this.els.meter.setAttribute("aria-valuenow", String(Math.round(level * 100)));
      },
      onTick: (t) => {
        this.els.elapsed.textContent = timecode(t);
        this.els.limitFill.style.transform = `scaleX(${Math.min(1, t / max).toFixed(4)})`;
      },
    });
    this.recorder.onDone = (result) => this.recordingDone(result);
    try {
      await this.recorder.start();
    } catch (err) {
      showError(this.els.error, err, this.config);
      return;
    }
    this.setRecordingUI(true);
    this.announce(`Recording. It stops by itself after ${max} seconds; press Stop to search now.`);
  }

  setRecordingUI(on) {
    const { record } = this.els;
    record.classList.toggle("recording", on);
    record.setAttribute("aria-pressed", on ? "true" : "false");
    record.querySelector(".label").textContent = on ? "Stop & search" : "Record";
    document.body.classList.toggle("is-recording", on);
  }

  recordingDone({ blob, seconds, type }) {
    this.setRecordingUI(false);
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    const stamp = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    this.search(new File([blob], `recording.${ext}`, { type }), `Recording ${stamp}`, seconds);
  }

  // ---------- the search job ----------
  announce(text) {
    this.els.live.textContent = text;
  }

  setStage(stage, failed = false) {
    const index = STAGES.indexOf(stage);
    for (const li of this.els.stages.children) {
      const i = STAGES.indexOf(li.dataset.stage);
      li.classList.toggle("done", i < index || (stage === "done" && i === index));
      li.classList.toggle("current", i === index && stage !== "done" && !failed);
      li.classList.toggle("failed", failed && i === index);
      if (i === index && stage !== "done") li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    }
    this.els.stages.dataset.stage = failed ? "failed" : stage;
  }

  // A search by example (a file or a recording) or, with ``text`` and no file, by description.
  async search(file, name, knownSeconds = null, text = null) {
    const gen = ++this.generation;
    clearError(this.els.error);
    this.els.section.hidden = true;
    this.els.results.replaceChildren();
    this.els.statusCard.hidden = false;
    this.els.queryName.textContent = name;
    this.els.queryDuration.textContent = knownSeconds ? timecode(knownSeconds) : "";
    this.els.textClasses.hidden = true;
    this.queryDuration = knownSeconds;
    if (this.queryUrl) URL.revokeObjectURL(this.queryUrl);
    this.queryUrl = null;
    this.els.queryAudio.removeAttribute("src");
    this.els.queryAudio.hidden = true; // shown once the browser can decode it (not for a text file)
    if (file) {
      this.queryUrl = URL.createObjectURL(file);
      this.els.queryAudio.src = this.queryUrl;
      file
        .arrayBuffer()
        .then(decode)
        .then((buffer) => {
          if (gen !== this.generation) return;
          this.queryDuration = buffer.duration;
          this.els.queryAudio.hidden = false;
          this.els.queryDuration.textContent = timecode(buffer.duration);
        })
        .catch(() => {});
    }

    this.setStage("uploading");
    this.announce(STAGE_TEXT.uploading);
    try {
      const form = new FormData();
      if (file) form.append("file", file, file.name || "query");
      else form.append("text", text);
      form.append("k", String(this.config.default_k ?? 10));
      const response = await request("/v1/searches", { method: "POST", body: form });
      let job = await response.json();
      const location = response.headers.get("Location") || `/v1/searches/${job.id}`;
      const deadline = Date.now() + SEARCH_TIMEOUT_MS;
      let last = null;
      while (gen === this.generation) {
        if (job.status !== last) {
          last = job.status;
          if (job.status === "done" || job.status === "failed") break;
          this.setStage(job.status);
          this.announce(job.progress || STAGE_TEXT[job.status] || job.status);
        }
        if (Date.now() > deadline) throw new ApiError("timeout", `Still ${job.status} after ${SEARCH_TIMEOUT_MS / 1000} s.`);
        await sleep(POLL_MS);
        job = await getJSON(location);
      }
      if (gen !== this.generation) return;
      this.lastJob = job;
      if (job.status === "failed") {
        const e = job.error || { code: "internal_error", message: "The search failed." };
        throw new ApiError(e.code, e.message);
      }
      this.setStage("done");
      this.showTextClasses(job);
      this.showResults(job);
    } catch (err) {
      if (gen !== this.generation) return;
      const current = this.els.stages.dataset.stage;
      this.setStage(STAGES.includes(current) ? current : "uploading", true);
      this.announce(`Search failed: ${explain(err.code, this.config)}`);
      showError(this.els.error, err, this.config);
    }
  }

  // ---------- results ----------
  showTextClasses(job) {
    const classes = job.text_classes || [];
    this.els.textClasses.hidden = !classes.length;
    this.els.textClasses.textContent = classes.length
      ? `Heard as: ${classes
          .slice(0, 5)
          .map((c) => `${c.name} (${Math.round(c.weight * 100)}%)`)
          .join(", ")}`
      : "";
  }

  showResults(job) {
    const results = job.results || [];
    const { section, results: list, meta, partial } = this.els;
    list.replaceChildren(...results.map((r, i) => this.renderResult(r, i)));
    section.hidden = false;
    meta.textContent = results.length ? `${results.length} match${results.length === 1 ? "" : "es"}, best first` : "";
    if (job.partial) {
      partial.hidden = false;
      partial.textContent =
        "Part of the library did not answer in time, so some matches may be missing. Search again for the full list.";
    } else {
      partial.hidden = true;
    }
    if (!results.length) {
      const li = document.createElement("li");
      li.className = "empty card";
      li.textContent = "No match in the library. Try a longer or cleaner recording, or add clips in the Library tab.";
      list.append(li);
      this.announce("Done: no match in the library.");
      return;
    }
    const best = results[0];
    this.announce(`Done: ${results.length} matches. Best: ${best.title} at ${timecode(this.startOf(best))}.`);
  }

  startOf(result) {
    // YouTube players take whole seconds of the video; library files start at the exact match.
    if (result.source && result.source.youtube_id) {
      return Math.floor((result.source.start_s || 0) + result.match_start_s);
    }
    return result.match_start_s;
  }

  linkOf(result) {
    const s = result.source || {};
    if (s.youtube_id) {
      return s.url || `https://www.youtube.com/watch?v=${encodeURIComponent(s.youtube_id)}&t=${this.startOf(result)}s`;
    }
    return `${location.origin}/v1/library/${encodeURIComponent(result.clip_id)}/audio#t=${result.match_start_s.toFixed(2)}`;
  }

  renderResult(result, index) {
    const node = this.els.template.content.firstElementChild.cloneNode(true);
    const src = result.source || {};
    const start = this.startOf(result);
    node.dataset.clipId = result.clip_id;
    node.dataset.title = result.title;
    node.dataset.kind = src.youtube_id ? "youtube" : "file";
    node.dataset.start = String(start);
    node.querySelector(".rank").textContent = String(index + 1);
    node.querySelector(".title").textContent = result.title;

    const badge = node.querySelector(".match");
    badge.textContent = result.match === "exact" ? "Exact copy" : "Similar";
    badge.classList.add(result.match === "exact" ? "badge-exact" : "badge-similar");
    badge.title =
      result.match === "exact"
        ? "This very recording was found (checked against the clip's audio, or by its fingerprint)"
        : "Sounds alike (embedding match)";

    const repeats = result.period_s ? `, repeats every ${result.period_s.toFixed(2)} s` : "";
    node.querySelector(".timecode").textContent =
      `match at ${timecode(start)}${src.youtube_id ? " in the video" : ""}${repeats}`;

    const avail = node.querySelector(".availability");
    const state = result.available === true ? "yes" : result.available === false ? "no" : "unknown";
    avail.dataset.state = state;
    avail.textContent = { yes: "Available", no: "No longer available", unknown: "Availability unknown" }[state];

    const pct = Math.max(0, Math.min(1, result.score));
    const score = node.querySelector(".score");
    score.setAttribute("aria-label", `Similarity ${result.score.toFixed(2)} of 1`);
    score.querySelector(".score-value").textContent = result.score.toFixed(2);
    score.querySelector(".score-fill").style.transform = `scaleX(${pct.toFixed(3)})`;

    const labels = node.querySelector(".labels");
    for (const label of result.labels || []) {
      const li = document.createElement("li");
      li.textContent = label;
      labels.append(li);
    }

    const media = node.querySelector(".media");
    if (src.youtube_id) this.renderYouTube(media, result, start);
    else this.renderFile(media, result);

    const copy = node.querySelector(".copy-link");
    copy.setAttribute("aria-label", `Copy link to ${result.title} at ${timecode(start)}`);
    copy.dataset.link = this.linkOf(result);
    copy.addEventListener("click", async () => {
      const ok = await copyText(copy.dataset.link);
      copy.textContent = ok ? "Copied ✓" : "Copy failed";
      this.announce(ok ? `Link to ${result.title} copied.` : "Could not copy the link.");
      setTimeout(() => (copy.textContent = "Copy link"), 2000);
    });
    return node;
  }

  renderYouTube(media, result, start) {
    const id = encodeURIComponent(result.source.youtube_id);
    const frame = document.createElement("iframe");
    frame.className = "yt";
    frame.src = `https://www.youtube-nocookie.com/embed/${id}?start=${start}&rel=0&modestbranding=1`;
    frame.title = `${result.title} (YouTube, from ${timecode(start, 0)})`;
    frame.loading = "lazy";
    frame.allow = "encrypted-media; picture-in-picture; fullscreen";
    frame.referrerPolicy = "strict-origin-when-cross-origin";
    media.append(frame);
    const open = document.createElement("a");
    open.className = "ext-link";
    open.href = `https://www.youtube.com/watch?v=${id}&t=${start}s`;
    open.target = "_blank";
    open.rel = "noopener";
    open.textContent = "Open on YouTube ↗";
    media.append(open);
  }

  renderFile(media, result) {
    const url = `/v1/library/${encodeURIComponent(result.clip_id)}/audio`;
    const start = result.match_start_s;
    const wrap = document.createElement("div");
    wrap.className = "file-player";

    const canvas = document.createElement("canvas");
    canvas.className = "waveform loading";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `Waveform of ${result.title}, loading`);

    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = `${url}#t=${start.toFixed(3)}`;
    audio.dataset.start = String(start);
    audio.setAttribute("aria-label", `${result.title}, starts at the match, ${timecode(start)}`);
    // The media fragment (#t=) starts it there; set currentTime too, for browsers that ignore fragments.
    audio.addEventListener(
      "loadedmetadata",
      () => {
        if (Math.abs(audio.currentTime - start) > 0.05) audio.currentTime = start;
      },
      { once: true },
    );

    const play = document.createElement("button");
    play.type = "button";
    play.className = "btn btn-primary btn-small play-match";
    play.textContent = `▶ Play match (${timecode(start)})`;
    play.addEventListener("click", () => {
      audio.currentTime = start;
      audio.play().catch(() => {});
    });

    const fileName = document.createElement("span");
    fileName.className = "muted file-name";
    fileName.textContent = result.source.file_name || "";

    const controls = document.createElement("div");
    controls.className = "file-controls";
    controls.append(play, audio, fileName);
    wrap.append(canvas, controls);
    media.append(wrap);

    const queryLen = Math.max(0.96, (this.queryDuration || 1) - (result.query_start_s || 0));
    this.loadWaveform(url, canvas, audio, result, start, queryLen);
  }

  async loadWaveform(url, canvas, audio, result, start, queryLen) {
    let state = null;
    const redraw = () => state && draw(canvas, state.bars, state.duration, state.region, audio.paused && audio.currentTime === 0 ? null : audio.currentTime);
    try {
      const response = await request(url);
      const size = Number(response.headers.get("content-length") || 0);
      if (size > WAVEFORM_MAX_BYTES) throw new Error("too large for a waveform");
      const buffer = await decode(await response.arrayBuffer());
      const duration = buffer.duration;
      const region = [start, Math.min(duration, start + queryLen)];
      state = { bars: peaks(buffer, 240), duration, region };
      canvas.classList.remove("loading");
      canvas.setAttribute(
        "aria-label",
        `Waveform of ${result.title} (${timecode(duration)}), match highlighted from ${timecode(region[0])} to ${timecode(region[1])}`,
      );
      redraw();
      audio.addEventListener("timeupdate", redraw);
      audio.addEventListener("seeked", redraw);
      new ResizeObserver(redraw).observe(canvas);
      canvas.addEventListener("click", (e) => {
        const rect = canvas.getBoundingClientRect();
        audio.currentTime = ((e.clientX - rect.left) / rect.width) * duration;
      });
    } catch (err) {
      canvas.classList.remove("loading");
      canvas.classList.add("unavailable");
      canvas.setAttribute("aria-label", "Waveform not available");
      const note = document.createElement("p");
      note.className = "muted small";
      note.textContent =
        err && err.code === "not_found" ? "The audio of this clip is not stored on this server." : "Waveform not available.";
      canvas.replaceWith(note);
    }
  }
}
