/* agentarch charts: SVG line, step and scatter charts drawn from the JSON the server sends (agentarch/web/charts.py).
 *
 * Written here rather than vendored: the pages need four styles of series, linear and log axes, a legend, hover and
 * click-through to a candidate, and nothing else, which is smaller as one file than any library plus its glue; and
 * it works offline. Every <figure class="chart" data-src="..."> is filled once its JSON arrives and redrawn when its
 * width changes, so a chart grows with the window. A point with a candidate id opens that candidate when clicked.
 */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1d5fa8", "#c0392b", "#2e8540", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"];
  const DOTS = "#9aa5b1";
  const HIT_PX = 12;

  function make(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  /* 0.95, 1.2k, 20k, 3M: short enough for a tick, exact enough to read */
  function format(value) {
    const size = Math.abs(value);
    for (const [unit, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (size >= unit) return +(value / unit).toPrecision(3) + suffix;
    }
    return String(+value.toPrecision(4));
  }

  function linearTicks(low, high) {
    const raw = (high - low) / 6;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / power;
    const step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * power;
    const ticks = [];
    for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  /* every digit within about a decade, 1-2-5 within a few, powers of ten beyond: a log axis always labels some */
  function logTicks(low, high) {
    const decades = Math.log10(high / low);
    const subs = decades < 1.2 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : decades < 4 ? [1, 2, 5] : [1];
    const ticks = [];
    for (let e = Math.floor(Math.log10(low)); e <= Math.ceil(Math.log10(high)); e++) {
      for (const s of subs) {
        const v = s * Math.pow(10, e);
        if (v >= low * 0.999 && v <= high * 1.001) ticks.push(v);
      }
    }
    return ticks;
  }

  /* the axis's range with a margin, and a function from value to pixel */
  function scale(values, axis, from, to) {
    const usable = axis.log ? values.filter((v) => v > 0) : values;
    let low = Math.min(...usable);
    let high = Math.max(...usable);
    if (axis.log) {
      if (low === high) { low /= 3; high *= 3; }
      const pad = Math.pow(high / low, 0.04);
      low /= pad; high *= pad;
      const span = Math.log10(high / low);
      return { low, high, ticks: logTicks(low, high), at: (v) => from + (to - from) * Math.log10(v / low) / span };
    }
    if (low === high) { low -= Math.abs(low) * 0.1 || 1; high += Math.abs(high) * 0.1 || 1; }
    const pad = (high - low) * 0.04;
    low -= pad; high += pad;
    return { low, high, ticks: linearTicks(low, high), at: (v) => from + (to - from) * (v - low) / (high - low) };
  }

  function draw(figure, data) {
    figure.querySelectorAll("svg, .legend, .empty, .tip").forEach((n) => n.remove());
    const points = data.series.flatMap((s) => s.points);
    const usable = points.filter((p) => (!data.x.log || p[0] > 0) && (!data.y.log || p[1] > 0));
    if (!usable.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = data.empty;
      figure.appendChild(empty);
      figure.dataset.points = "0";
      return;
    }
    const width = Math.max(260, figure.clientWidth);
    const height = Math.round(Math.min(440, Math.max(240, width * 0.5)));
    const ys = scale(usable.map((p) => p[1]), data.y, 0, 1);
    const yLabels = ys.ticks.map(format);
    /* the left margin fits the widest tick label, so no label is clipped */
    const left = 30 + 7 * Math.max(...yLabels.map((t) => t.length));
    const box = { left, right: width - 14, top: 10, bottom: height - 42 };
    const x = scale(usable.map((p) => p[0]), data.x, box.left, box.right);
    const y = scale(usable.map((p) => p[1]), data.y, box.bottom, box.top);
    const svg = make("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": `${data.y.label} against ${data.x.label}` });
    const grid = make("g", { class: "grid" }, svg);
    x.ticks.forEach((t) => {
      const px = x.at(t);
      make("line", { x1: px, x2: px, y1: box.top, y2: box.bottom }, grid);
      make("text", { x: px, y: box.bottom + 16, "text-anchor": "middle" }, grid).textContent = format(t);
    });
    y.ticks.forEach((t, i) => {
      const py = y.at(t);
      make("line", { x1: box.left, x2: box.right, y1: py, y2: py }, grid);
      make("text", { x: box.left - 6, y: py + 4, "text-anchor": "end" }, grid).textContent = yLabels[i] || format(t);
    });
    make("rect", { x: box.left, y: box.top, width: box.right - box.left, height: box.bottom - box.top, class: "frame" }, svg);
    make("text", { x: (box.left + box.right) / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, svg).textContent = data.x.label + (data.x.log ? " (log)" : "");
    make("text", { x: 12, y: (box.top + box.bottom) / 2, "text-anchor": "middle", class: "axis", transform: `rotate(-90 12 ${(box.top + box.bottom) / 2})` }, svg).textContent = data.y.label + (data.y.log ? " (log)" : "");

    const legend = document.createElement("ul");
    legend.className = "legend";
    const placed = [];
    let lines = 0;
    let dots = 0;
    data.series.forEach((series) => {
      /* the first cloud of dots grey (the crowd), a second pale red (those breaking a constraint) */
      const color = series.style === "dots" ? (dots++ === 0 ? DOTS : "#e0b4b4") : COLORS[lines++ % COLORS.length];
      const group = make("g", { class: `series ${series.style}` }, svg);
      const shown = series.points.filter((p) => (!data.x.log || p[0] > 0) && (!data.y.log || p[1] > 0));
      const xy = shown.map((p) => [x.at(p[0]), y.at(p[1]), p]);
      if (series.style !== "dots" && xy.length > 1) {
        let path = `M${xy[0][0]},${xy[0][1]}`;
        for (let i = 1; i < xy.length; i++) {
          path += series.style === "line" ? ` L${xy[i][0]},${xy[i][1]}` : ` H${xy[i][0]} V${xy[i][1]}`;
        }
        make("path", { d: path, stroke: color, fill: "none", "stroke-width": series.style === "line" ? 1.5 : 2.2 }, group);
      }
      if (series.style !== "line" || xy.length === 1) {
        const radius = series.style === "dots" ? 2.5 : 4;
        xy.forEach(([px, py, p]) => {
          const attrs = { cx: px, cy: py, r: radius, fill: color };
          if (p[2] != null) attrs["data-id"] = p[2];
          make("circle", attrs, group);
        });
      }
      xy.forEach((item) => placed.push({ px: item[0], py: item[1], p: item[2], series }));
      const key = document.createElement("li");
      key.innerHTML = `<span class="swatch" style="background:${color}"></span>`;
      key.appendChild(document.createTextNode(series.label));
      legend.appendChild(key);
    });

    const tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    const ring = make("circle", { r: 6, class: "ring", visibility: "hidden" }, svg);
    function nearest(event) {
      const rect = svg.getBoundingClientRect();
      const mx = (event.clientX - rect.left) * (width / rect.width);
      const my = (event.clientY - rect.top) * (height / rect.height);
      let found = null;
      let best = HIT_PX * HIT_PX;
      for (const item of placed) {
        const d = (item.px - mx) ** 2 + (item.py - my) ** 2;
        if (d <= best) { best = d; found = item; }
      }
      return found;
    }
    svg.addEventListener("mousemove", (event) => {
      const item = nearest(event);
      if (!item) { tip.hidden = true; ring.setAttribute("visibility", "hidden"); svg.style.cursor = ""; return; }
      const [px, py, p] = [item.px, item.py, item.p];
      ring.setAttribute("cx", px);
      ring.setAttribute("cy", py);
      ring.setAttribute("visibility", "visible");
      const who = p[2] != null ? `#${p[2]}${p[3] ? " " + p[3] : ""}` : item.series.label;
      tip.textContent = `${who} · ${data.x.label} ${format(p[0])} · ${data.y.label} ${format(p[1])}`;
      tip.hidden = false;
      tip.style.left = `${(px / width) * 100}%`;
      tip.style.top = `${(py / height) * 100}%`;
      svg.style.cursor = p[2] != null ? "pointer" : "";
    });
    svg.addEventListener("mouseleave", () => { tip.hidden = true; ring.setAttribute("visibility", "hidden"); });
    svg.addEventListener("click", (event) => {
      const item = nearest(event);
      if (item && item.p[2] != null) window.location.href = `/candidate/${item.p[2]}`;
    });
    figure.appendChild(svg);
    figure.appendChild(tip);
    figure.appendChild(legend);
    figure.dataset.points = String(placed.length);
    figure.dataset.width = String(width);
  }

  function load(figure) {
    fetch(figure.dataset.src, { credentials: "same-origin" })
      .then((response) => response.json())
      .then((data) => {
        if (data.error) throw new Error(data.error);
        figure._chart = data;
        draw(figure, data);
        let drawnAt = figure.clientWidth;
        new ResizeObserver(() => {
          if (Math.abs(figure.clientWidth - drawnAt) > 4) { drawnAt = figure.clientWidth; draw(figure, data); }
        }).observe(figure);
      })
      .catch((error) => {
        const note = document.createElement("p");
        note.className = "empty";
        note.textContent = `chart not drawn: ${error.message}`;
        figure.appendChild(note);
      });
  }

  function init(root) {
    root.querySelectorAll("figure.chart[data-src]").forEach(load);
  }

  window.agentarchCharts = { init };
  document.addEventListener("DOMContentLoaded", () => init(document));
})();
