// Entry point: read the public config, wire the tabs, start the two panels.

import { getJSON } from "./api.js";
import { LibraryPanel } from "./library.js";
import { SearchPanel, timecode } from "./search.js";

const DEFAULTS = { max_query_s: 60, max_upload_mb: 50, default_k: 10, max_k: 100 };

async function loadConfig() {
  try {
    return { ...DEFAULTS, ...(await getJSON("/v1/config")) };
  } catch {
    return { ...DEFAULTS };
  }
}

function setupTabs(onShow) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = false) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", tab.id === "tab-library" ? "#library" : "#search");
    onShow(tab.id);
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) {
        e.preventDefault();
        select(tabs[(i + step + tabs.length) % tabs.length], true);
      } else if (e.key === "Home" || e.key === "End") {
        e.preventDefault();
        select(tabs[e.key === "Home" ? 0 : tabs.length - 1], true);
      }
    });
  });
  if (location.hash === "#library") select(document.getElementById("tab-library"));
}

async function main() {
  const config = await loadConfig();
  document.getElementById("max-query").textContent = String(config.max_query_s);
  document.getElementById("rec-limit").textContent = timecode(config.max_query_s, 0);
  document.getElementById("max-upload").textContent = String(config.max_upload_mb);
  const search = new SearchPanel(config);
  const library = new LibraryPanel(config);
  setupTabs((id) => id === "tab-library" && library.show());
  window.echovids = { config, search, library };
  document.body.dataset.ready = "true";
}

main();
