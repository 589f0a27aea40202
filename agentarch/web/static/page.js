/* agentarch pages: what a page does on its own, beyond its charts (charts.js).
 *
 * - A running run's page (#live with data-refresh) fetches itself again every few seconds and swaps in the new
 *   #live part, redrawing its charts, until the run stops; then it reloads once for the final summary.
 * - The review queue asks for a person's name once (#reviewer) and copies it into every decision form; it is
 *   remembered in this browser (the server also sets a cookie when a decision is taken, for pages without this
 *   script).
 */
(function () {
  "use strict";
  const NAME_KEY = "agentarch.reviewer";

  function live() {
    const part = document.getElementById("live");
    if (!part || !part.dataset.refresh) return;
    const seconds = Math.max(1, Number(part.dataset.refresh));
    const timer = window.setInterval(() => {
      fetch(window.location.href, { credentials: "same-origin" })
        .then((response) => response.text())
        .then((html) => {
          const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          if (!fresh) return;
          if (!fresh.dataset.refresh) {
            window.clearInterval(timer);
            window.location.reload();
            return;
          }
          const current = document.getElementById("live");
          current.innerHTML = fresh.innerHTML;
          current.dataset.updated = new Date().toISOString();
          if (window.agentarchCharts) window.agentarchCharts.init(current);
        })
        .catch(() => {});
    }, seconds * 1000);
  }

  function reviewer() {
    const field = document.getElementById("reviewer");
    const targets = () => document.querySelectorAll("input.reviewer-name");
    if (!field && !targets().length) return;
    const stored = window.localStorage.getItem(NAME_KEY);
    const sync = (name) => targets().forEach((input) => { input.value = name; });
    if (field) {
      if (!field.value && stored) field.value = stored;
      sync(field.value);
      field.addEventListener("input", () => {
        sync(field.value);
        window.localStorage.setItem(NAME_KEY, field.value);
      });
    } else if (stored) {
      targets().forEach((input) => { if (!input.value) input.value = stored; });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    live();
    reviewer();
  });
})();
