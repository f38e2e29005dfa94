// rayline web UI: tabs, confirmation dialogs, JSON checks and auto-refresh.
// Pages are rendered (and escaped) on the server; this script only moves server HTML
// around (parsed with DOMParser, whose scripts never run) and never builds markup from
// data.
"use strict";

(function () {
  const TAB_KEY = "rayline.tab";
  const REFRESH_KEY = "rayline.refresh";

  function showTab(name) {
    const tabs = document.querySelectorAll("[data-tab]");
    if (!tabs.length) return;
    if (!document.querySelector('[data-tab="' + name + '"]')) name = tabs[0].dataset.tab;
    tabs.forEach((tab) => {
      const on = tab.dataset.tab === name;
      tab.classList.toggle("active", on);
      tab.setAttribute("aria-selected", on ? "true" : "false");
    });
    document.querySelectorAll("[data-panel]").forEach((panel) => {
      panel.hidden = panel.dataset.panel !== name;
    });
    sessionStorage.setItem(TAB_KEY, name);
  }

  function currentTab() {
    const hash = location.hash.replace("#", "");
    return hash || sessionStorage.getItem(TAB_KEY) || "timeline";
  }

  document.addEventListener("click", (event) => {
    const tab = event.target.closest("[data-tab]");
    if (tab) {
      history.replaceState(null, "", "#" + tab.dataset.tab);
      showTab(tab.dataset.tab);
      return;
    }
    const opener = event.target.closest("[data-open]");
    if (opener && !opener.disabled) {
      const dialog = document.getElementById(opener.dataset.open);
      if (dialog) dialog.showModal();
      return;
    }
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog").close();
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const json = form.querySelector("[data-json]");
    if (json) {
      try {
        JSON.parse(json.value.trim() || "null");
        json.setCustomValidity("");
      } catch (err) {
        json.setCustomValidity("Not valid JSON: " + err.message);
        json.reportValidity();
        event.preventDefault();
        return;
      }
    }
    const button = form.querySelector("[data-confirm]");
    if (button) button.disabled = true; // one submission per confirmation
  });

  document.addEventListener("input", (event) => {
    if (event.target.matches("[data-json]")) event.target.setCustomValidity("");
  });

  // ---------------------------------------------------------------- auto-refresh

  function refreshing() {
    const box = document.getElementById("auto-refresh");
    return box ? box.checked : document.querySelector('[data-live][data-running="1"]') !== null;
  }

  async function refresh() {
    if (document.visibilityState !== "visible") return;
    if (document.querySelector("dialog[open]")) return;
    if (!refreshing()) return;
    let response;
    try {
      response = await fetch(location.href, { headers: { "X-Rayline-Refresh": "1" } });
    } catch (err) {
      return; // the server is away for a moment: try again next time
    }
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelectorAll("[data-live]").forEach((live) => {
      const fresh = page.getElementById(live.id);
      if (!fresh) return;
      const open = new Set(Array.from(live.querySelectorAll("details[open]"), (d) => pathOf(d, live)));
      live.replaceWith(fresh);
      fresh.querySelectorAll("details").forEach((d) => {
        if (open.has(pathOf(d, fresh))) d.open = true;
      });
    });
    ["workflow-status"].forEach((id) => {
      const mine = document.getElementById(id);
      const fresh = page.getElementById(id);
      if (mine && fresh) mine.replaceWith(fresh);
    });
    document.querySelectorAll(".wf-actions [data-open]").forEach((button) => {
      const fresh = page.getElementById(button.id);
      if (fresh) button.disabled = fresh.disabled;
    });
    showTab(currentTab());
  }

  function pathOf(node, root) {
    const steps = [];
    while (node && node !== root) {
      steps.push(Array.prototype.indexOf.call(node.parentNode.children, node));
      node = node.parentNode;
    }
    return steps.join("/");
  }

  document.addEventListener("DOMContentLoaded", () => {
    showTab(currentTab());
    const box = document.getElementById("auto-refresh");
    if (box) {
      box.checked = localStorage.getItem(REFRESH_KEY) !== "off";
      box.addEventListener("change", () => {
        localStorage.setItem(REFRESH_KEY, box.checked ? "on" : "off");
      });
    }
    const seconds = parseFloat(document.body.dataset.refresh || "0");
    if (seconds > 0 && document.querySelector("[data-live]")) {
      setInterval(refresh, seconds * 1000);
    }
  });
})();
