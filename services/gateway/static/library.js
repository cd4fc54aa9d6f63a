// The Library tab: list and filter clips, upload files with the API key, delete. Endpoints:
//   GET /v1/library?label=&q=&page=  ->  {items: [{clip_id, title, labels, duration_s, source, ...}], total, page}
//   POST /v1/library  (multipart file..., title, labels; Authorization: Bearer <key>)  ->  202
//   DELETE /v1/library/{clip_id}  ->  204

import { ApiError, getJSON, request } from "./api.js";
import { clearError, showError } from "./messages.js";
import { timecode } from "./search.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "echovids.apiKey";

export class LibraryPanel {
  constructor(config) {
    this.config = config;
    this.page = 1;
    this.pageSize = null;
    this.total = 0;
    this.loaded = false;
    this.els = {
      unavailable: $("library-unavailable"),
      key: $("api-key"),
      uploadForm: $("upload-form"),
      files: $("upload-files"),
      title: $("upload-title"),
      labels: $("upload-labels"),
      uploadBtn: $("upload-btn"),
      uploadStatus: $("upload-status"),
      filter: $("library-filter"),
      q: $("filter-q"),
      label: $("filter-label"),
      labelOptions: $("label-options"),
      status: $("library-status"),
      error: $("library-error"),
      rows: $("library-rows"),
      prev: $("page-prev"),
      next: $("page-next"),
      pageInfo: $("page-info"),
    };
    this.els.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    this.els.key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, this.els.key.value));
    this.els.filter.addEventListener("submit", (e) => {
      e.preventDefault();
      this.page = 1;
      this.load();
    });
    this.els.prev.addEventListener("click", () => {
      this.page = Math.max(1, this.page - 1);
      this.load();
    });
    this.els.next.addEventListener("click", () => {
      this.page += 1;
      this.load();
    });
    this.els.uploadForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.upload();
    });
  }

  show() {
    if (!this.loaded) this.load();
  }

  authHeaders() {
    const key = this.els.key.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async load() {
    this.loaded = true;
    clearError(this.els.error);
    const params = new URLSearchParams();
    if (this.els.label.value.trim()) params.set("label", this.els.label.value.trim());
    if (this.els.q.value.trim()) params.set("q", this.els.q.value.trim());
    params.set("page", String(this.page));
    this.els.status.textContent = "Loading the library…";
    let body;
    try {
      body = await getJSON(`/v1/library?${params}`);
    } catch (err) {
      if (err.status === 404 || err.status === 405) {
        this.els.unavailable.hidden = false;
        this.els.unavailable.textContent =
          "This server does not offer the library API yet, so clips cannot be listed or managed here. Searching works.";
        document.body.dataset.library = "unavailable";
        this.els.status.textContent = "";
        return;
      }
      this.els.status.textContent = "";
      showError(this.els.error, err, this.config);
      return;
    }
    document.body.dataset.library = "available";
    this.els.unavailable.hidden = true;
    const items = body.items || [];
    this.total = body.total ?? items.length;
    this.page = body.page ?? this.page;
    this.pageSize = body.page_size ?? body.size ?? this.pageSize ?? Math.max(items.length, 1);
    this.render(items);
    const pages = Math.max(1, Math.ceil(this.total / this.pageSize));
    this.els.pageInfo.textContent = `Page ${this.page} of ${pages} · ${this.total} clip${this.total === 1 ? "" : "s"}`;
    this.els.prev.disabled = this.page <= 1;
    this.els.next.disabled = this.page >= pages;
    this.els.status.textContent = items.length ? `${this.total} clips.` : "No clips match.";
  }

  render(items) {
    const known = new Set([...this.els.labelOptions.options].map((o) => o.value));
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.clipId = item.clip_id;
      const title = document.createElement("th");
      title.scope = "row";
      title.textContent = item.title;
      if (item.status && item.status !== "ready") {
        const s = document.createElement("span");
        s.className = "badge badge-status";
        s.textContent = item.status;
        title.append(" ", s);
      }
      const labels = document.createElement("td");
      const ul = document.createElement("ul");
      ul.className = "labels";
      for (const label of item.labels || []) {
        const li = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "chip";
        b.textContent = label;
        b.setAttribute("aria-label", `Show only clips labelled ${label}`);
        b.addEventListener("click", () => {
          this.els.label.value = label;
          this.page = 1;
          this.load();
        });
        li.append(b);
        ul.append(li);
        if (!known.has(label)) {
          known.add(label);
          const opt = document.createElement("option");
          opt.value = label;
          this.els.labelOptions.append(opt);
        }
      }
      labels.append(ul);
      const length = document.createElement("td");
      length.className = "num";
      length.textContent = item.duration_s != null ? timecode(item.duration_s) : "—";
      const source = document.createElement("td");
      const src = item.source || {};
      if (src.youtube_id) {
        const a = document.createElement("a");
        a.href = src.url || `https://www.youtube.com/watch?v=${encodeURIComponent(src.youtube_id)}`;
        a.target = "_blank";
        a.rel = "noopener";
        a.textContent = `YouTube ${src.youtube_id}`;
        source.append(a);
      } else {
        source.textContent = src.file_name || "file";
      }
      const actions = document.createElement("td");
      actions.className = "actions";
      actions.append(this.playButton(item), this.deleteButton(item));
      tr.append(title, labels, length, source, actions);
      return tr;
    });
    this.els.rows.replaceChildren(...rows);
  }

  playButton(item) {
    const play = document.createElement("button");
    play.type = "button";
    play.className = "btn btn-secondary btn-small play";
    play.textContent = "▶ Play";
    play.setAttribute("aria-label", `Play ${item.title}`);
    play.setAttribute("aria-pressed", "false");
    play.addEventListener("click", () => {
      this.player ??= new Audio();
      const url = `/v1/library/${encodeURIComponent(item.clip_id)}/audio`;
      const playing = this.playing === play && !this.player.paused;
      this.player.pause();
      if (this.playing) {
        this.playing.textContent = "▶ Play";
        this.playing.setAttribute("aria-pressed", "false");
      }
      if (playing) {
        this.playing = null;
        return;
      }
      this.player.src = url;
      this.player.onended = () => {
        play.textContent = "▶ Play";
        play.setAttribute("aria-pressed", "false");
      };
      this.player.play().then(
        () => {
          this.playing = play;
          play.textContent = "■ Stop";
          play.setAttribute("aria-pressed", "true");
        },
        () => (this.els.status.textContent = `The audio of ${item.title} is not available on this server.`),
      );
    });
    return play;
  }

  deleteButton(item) {
    const wrap = document.createElement("div");
    wrap.className = "delete-wrap";
    const del = document.createElement("button");
    del.type = "button";
    del.className = "btn btn-danger btn-small delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete ${item.title}`);
    const confirm = document.createElement("button");
    confirm.type = "button";
    confirm.className = "btn btn-danger btn-small confirm-delete";
    confirm.textContent = "Really delete";
    confirm.setAttribute("aria-label", `Really delete ${item.title}`);
    confirm.hidden = true;
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "btn btn-secondary btn-small";
    cancel.textContent = "Keep";
    cancel.hidden = true;
    del.addEventListener("click", () => {
      del.hidden = true;
      confirm.hidden = cancel.hidden = false;
      confirm.focus();
    });
    cancel.addEventListener("click", () => {
      del.hidden = false;
      confirm.hidden = cancel.hidden = true;
      del.focus();
    });
    confirm.addEventListener("click", async () => {
      clearError(this.els.error);
      try {
        await request(`/v1/library/${encodeURIComponent(item.clip_id)}`, {
          method: "DELETE",
          headers: this.authHeaders(),
        });
        await this.load();
        this.els.status.textContent = `Deleted ${item.title}.`;
      } catch (err) {
        showError(this.els.error, err, this.config);
        cancel.click();
      }
    });
    wrap.append(del, confirm, cancel);
    return wrap;
  }

  async upload() {
    const files = [...(this.els.files.files || [])];
    const status = this.els.uploadStatus;
    clearError(this.els.error);
    if (!files.length) {
      showError(this.els.error, new ApiError("validation_error", "Choose at least one audio file to upload."), this.config);
      this.els.files.focus();
      return;
    }
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    if (this.els.title.value.trim()) form.append("title", this.els.title.value.trim());
    if (this.els.labels.value.trim()) form.append("labels", this.els.labels.value.trim());
    this.els.uploadBtn.disabled = true;
    status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`;
    try {
      await request("/v1/library", { method: "POST", body: form, headers: this.authHeaders() });
      status.textContent = `Uploaded ${files.length} file${files.length === 1 ? "" : "s"}; they appear below once indexed.`;
      this.els.uploadForm.reset();
      this.els.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
      // Indexing takes a few seconds: refresh the list a few times.
      for (const delay of [500, 2000, 5000]) setTimeout(() => this.load(), delay);
    } catch (err) {
      status.textContent = "";
      if (err.status === 404 || err.status === 405) {
        err.code = "method_not_allowed";
      }
      showError(this.els.error, err, this.config);
    } finally {
      this.els.uploadBtn.disabled = false;
    }
  }
}
