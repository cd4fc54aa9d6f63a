// One clear sentence for each error code the API (or the browser) can produce.

const fmtMB = (mb) => `${Number(mb).toLocaleString(undefined, { maximumFractionDigits: 1 })} MB`;
const fmtS = (s) => `${Number(s).toLocaleString(undefined, { maximumFractionDigits: 1 })} seconds`;

export function explain(code, config = {}) {
  const maxMB = config.max_upload_mb ?? 50;
  const maxS = config.max_query_s ?? 60;
  switch (code) {
    case "payload_too_large":
      return `That file is too large: uploads are limited to ${fmtMB(maxMB)}. Trim it to the few seconds around the sound you want.`;
    case "unsupported_media_type":
      return "That file is not audio. Choose a WAV, FLAC, OGG, MP3, M4A or WebM file (video files with a sound track work too).";
    case "undecodable_audio":
      return "The file looks like audio but could not be decoded. It may be damaged, empty or use an unusual codec: try exporting it again as WAV or MP3.";
    case "audio_too_short":
      return "That sound is too short to search. Record or choose at least a quarter of a second of audio (a library clip needs a tenth).";
    case "silent_audio":
      return "That recording is silent: nothing in it is loud enough to search for. Check the microphone, or choose another file.";
    case "audio_too_long":
      return `That recording is longer than the ${fmtS(maxS)} limit. Trim it to the moment you are looking for.`;
    case "validation_error":
      return "The request was not accepted as sent.";
    case "not_found":
      return "Not found: the search may have expired (results are kept a few hours), or the clip was deleted.";
    case "method_not_allowed":
      return "This server does not offer that action.";
    case "embedding_space_mismatch":
      return "The library was indexed with a different model than the one answering queries. An administrator needs to re-index it.";
    case "text_search_unavailable":
      return "This library cannot be searched by description yet: its clips carry no sound classes. An administrator can run echovids reindex-classes (YAMNet libraries only).";
    case "unauthorized":
      return "This needs the library API key. Enter it in the API key field and try again.";
    case "forbidden":
      return "That API key is not allowed to change the library.";
    case "service_unavailable":
      return "The search service is not ready right now (a worker may be starting). Try again in a moment.";
    case "network_error":
      return "Cannot reach the Echovids server. Check that it is running and your connection is up.";
    case "timeout":
      return "The search is taking much longer than usual. The service may be overloaded; try again shortly.";
    case "mic_denied":
      return "Microphone access was blocked. Allow the microphone for this site in the browser's address bar, then press Record again.";
    case "mic_missing":
      return "No microphone was found. Plug one in, or drop a file instead.";
    case "mic_unsupported":
      return "This browser cannot record audio here. Use a recent Chrome, Edge or Firefox, or drop a file instead.";
    case "mic_error":
      return "The microphone could not be started.";
    case "internal_error":
      return "Something went wrong on the server. Try again; if it keeps happening, the server log says why.";
    default:
      return "Something went wrong.";
  }
}

// Fill an alert element: the friendly sentence, then the server's own words and the code for support.
export function showError(el, err, config) {
  const code = err && err.code ? err.code : "internal_error";
  const detail = err && err.message ? err.message : "";
  el.replaceChildren();
  el.dataset.code = code;
  const strong = document.createElement("strong");
  strong.className = "alert-title";
  strong.textContent = explain(code, config);
  el.append(strong);
  if (detail) {
    const p = document.createElement("p");
    p.className = "alert-detail";
    p.textContent = detail;
    const c = document.createElement("code");
    c.textContent = code;
    p.append(" ", c);
    el.append(p);
  }
  el.hidden = false;
}

export function clearError(el) {
  el.hidden = true;
  el.replaceChildren();
  delete el.dataset.code;
}
