// The dashboard's script layer: live updates (server-sent events), charts (uPlot),
// confirmed actions, and the theme switch. Pages work without it, read-only.
"use strict";
(function () {
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var message = document.getElementById("message");

  // --- theme -------------------------------------------------------------------------
  var themeButton = document.getElementById("theme");
  function showTheme() {
    var dark = document.documentElement.dataset.theme === "dark";
    themeButton.setAttribute("aria-pressed", dark ? "true" : "false");
    themeButton.textContent = dark ? "Light theme" : "Dark theme";
  }
  themeButton.addEventListener("click", function () {
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("sqlifier-theme", next); } catch (e) { /* private mode */ }
    showTheme();
    drawCharts(true);
  });
  showTheme();

  // --- charts ------------------------------------------------------------------------
  // Each chart's uPlot is made once and kept across live updates (found again by its
  // figure's data-key): an update moves it into the new figure and gives it the new data.
  // A theme switch makes them again, in the theme's colours. Sizes are all read before
  // anything is drawn, so that drawing does not force the layout again chart by chart.
  var plots = {};  // data-key -> { u: uPlot, holder: { chart: … }, kind: "service" | … }
  var NAMES = ["--fg", "--line", "--accent", "--bad", "--warn", "--stable", "--canary"];
  function palette() {
    var style = getComputedStyle(document.documentElement), colors = {};
    NAMES.forEach(function (name) { colors[name] = style.getPropertyValue(name).trim(); });
    return colors;
  }
  function pageData() {
    var node = document.getElementById("page-data");
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }
  function format(unit) {
    return function (u, values) {
      return values.map(function (v) {
        if (v == null) return "";
        if (unit === "%") return +(v * 100).toFixed(2) + "%";
        if (unit === "s") return +(v * 1000).toFixed(1) + " ms";
        if (unit === "bytes") return +(v / 1048576).toFixed(1) + " MiB";
        return +v.toFixed(2) + "";
      });
    };
  }
  function xRange(holder) {
    return function () {
      var chart = holder.chart;
      return [chart.since, Math.max(chart.until, chart.since + 60)];
    };
  }
  function yRange(holder) {
    return function () {
      var chart = holder.chart;
      var all = chart.v.concat(chart.thresholds.map(function (th) { return th.value; }));
      var hi = Math.max.apply(null, all), lo = Math.min.apply(null, all.concat([0]));
      return [lo, hi * 1.1 || 1];
    };
  }
  function hasValues(list) {
    return (list || []).some(function (v) { return v !== null && v !== undefined; });
  }
  function width(plot) { return Math.max(280, plot.clientWidth || 400); }
  function axes(unit, colors) {
    var fg = colors["--fg"], line = colors["--line"];
    return [
      { stroke: fg, grid: { stroke: line }, ticks: { stroke: line } },
      { stroke: fg, grid: { stroke: line }, ticks: { stroke: line }, values: format(unit), size: 70 }
    ];
  }
  function thresholdsAndFirings(holder, colors) {
    return function (u) {
      var ctx = u.ctx, chart = holder.chart;
      ctx.save();
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.strokeStyle = colors["--bad"];
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      (chart.thresholds || []).forEach(function (th) {
        var y = u.valToPos(th.value, "y", true);
        ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
      });
      ctx.setLineDash([]);
      ctx.fillStyle = colors["--warn"];
      (chart.firings || []).forEach(function (f) {
        var x = u.valToPos(f.t, "x", true);
        ctx.beginPath(); ctx.arc(x, u.bbox.top + 6 * devicePixelRatio, 5 * devicePixelRatio, 0, 2 * Math.PI); ctx.fill();
      });
      ctx.restore();
    };
  }
  // What one figure shows: its kind, its chart's record, and uPlot's data (null: no data).
  function spec(page, data, index) {
    if (page === "service" && data[index]) {
      var chart = data[index];
      return { kind: "service", chart: chart, height: 180,
               data: hasValues(chart.v) ? [chart.t, chart.v] : null };
    }
    if (page === "deploys" && data[index]) {
      var run = data[index];
      return { kind: "track", chart: run, height: 180,
               data: hasValues(run.stable) || hasValues(run.canary) ? [run.t, run.stable, run.canary] : null };
    }
    if (page === "dora" && data.names && data.names[index]) {
      var name = data.names[index];
      return { kind: "dora", chart: { name: name }, height: 160,
               data: [data.trend.map(function (w) { return w.until; }),
                      data.trend.map(function (w) { return w[name]; })] };
    }
    return null;
  }
  function make(found, holder, size, colors, plot) {
    var chart = found.chart, opts;
    if (found.kind === "service") {
      opts = {
        width: size, height: found.height, axes: axes(chart.unit, colors),
        scales: { x: { time: true, range: xRange(holder) },
                  y: chart.thresholds && chart.thresholds.length ? { range: yRange(holder) } : {} },
        series: [{}, { label: chart.title, stroke: colors["--accent"], width: 1.5 }],
        hooks: { draw: [thresholdsAndFirings(holder, colors)] }
      };
    } else if (found.kind === "track") {
      opts = {
        width: size, height: found.height, axes: axes(chart.unit, colors),
        scales: { x: { time: true, range: xRange(holder) } },
        series: [{}, { label: "stable", stroke: colors["--stable"], width: 1.5, spanGaps: true },
                 { label: "canary", stroke: colors["--canary"], width: 1.5, spanGaps: true }]
      };
    } else {
      opts = {
        width: size, height: found.height, axes: axes("", colors), scales: { x: { time: true } },
        series: [{}, { label: chart.name.replace(/_/g, " "), stroke: colors["--accent"], width: 1.5,
                       spanGaps: true, points: { show: true } }]
      };
    }
    return new uPlot(opts, found.data, plot);
  }
  function drawCharts(again) {
    var kept = {};
    if (again) { Object.keys(plots).forEach(function (key) { plots[key].u.destroy(); }); plots = {}; }
    var data = typeof uPlot === "undefined" ? null : pageData();
    var page = document.body.dataset.page;
    var figures = data ? Array.prototype.slice.call(main.querySelectorAll("figure.chart")) : [];
    // read first: every plot's width (one layout) and the theme's colours (one style)
    var sizes = figures.map(function (figure) { return width(figure.querySelector(".plot")); });
    var colors = figures.length ? palette() : null;
    // then write, in the figures' order
    figures.forEach(function (figure, n) {
      var plot = figure.querySelector(".plot");
      var key = figure.dataset.key || figure.dataset.chart;
      var found = spec(page, data, Number(figure.dataset.chart));
      var known = plots[key];
      if (found && found.data) {
        if (known && known.kind === found.kind) {
          known.holder.chart = found.chart;
          plot.appendChild(known.u.root);
          if (known.u.width !== sizes[n]) known.u.setSize({ width: sizes[n], height: found.height });
          known.u.setData(found.data);
          kept[key] = known;
        } else {
          var holder = { chart: found.chart };
          kept[key] = { u: make(found, holder, sizes[n], colors, plot), holder: holder, kind: found.kind };
        }
      } else if (found) {
        plot.textContent = "no data yet";
        plot.classList.add("empty");
      }
      plot.dataset.drawn = "1";
    });
    Object.keys(plots).forEach(function (key) { if (!kept[key]) plots[key].u.destroy(); });
    plots = kept;
  }

  // --- live updates ------------------------------------------------------------------
  var fetching = false, again = false;
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    var url = location.pathname + (location.search ? location.search + "&" : "?") + "fragment=1";
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      var focused = document.activeElement && document.activeElement.id;
      main.innerHTML = html;
      stampClock();
      if (focused) { var node = document.getElementById(focused); if (node) node.focus(); }
      bindForms();
      drawCharts();
      var version = document.getElementById("page-data");
      if (version) document.body.dataset.version = version.dataset.version;
      live.textContent = "live · updated " + new Date().toLocaleTimeString();
    }).catch(function () { live.textContent = "update failed; retrying"; })
      .finally(function () { fetching = false; if (again) { again = false; refresh(); } });
  }
  function follow() {
    if (typeof EventSource === "undefined") { live.textContent = "no live updates in this browser"; return; }
    var source = new EventSource("/events");
    source.addEventListener("hello", function (e) {
      live.textContent = "live";
      if (e.data !== document.body.dataset.version) refresh();
    });
    source.addEventListener("change", function () { refresh(); });
    source.onerror = function () { live.textContent = "reconnecting…"; };
  }

  // --- actions -----------------------------------------------------------------------
  var dialog = document.getElementById("confirm");
  function ask(text) {
    return new Promise(function (resolve) {
      if (!dialog || typeof dialog.showModal !== "function") { resolve(window.confirm(text)); return; }
      document.getElementById("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "yes");
      });
      dialog.showModal();
      document.getElementById("confirm-yes").focus();
    });
  }
  function say(text, ok) {
    message.hidden = false;
    message.textContent = text;
    message.className = "message " + (ok ? "good" : "bad");
  }
  function bindForms() {
    main.querySelectorAll("form.action").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        ask(form.dataset.confirm).then(function (yes) {
          if (!yes) { say("cancelled: nothing was done", true); return; }
          form.querySelector("input[name=confirm]").value = "yes";
          var body = new URLSearchParams(new FormData(form));
          fetch(form.action, { method: "POST", body: body, credentials: "same-origin",
                               headers: { "Accept": "application/json" } })
            .then(function (r) { return r.json(); })
            .then(function (answer) { say((answer.ok ? "done: " : "refused: ") + (answer.message || answer.error), answer.ok); })
            .catch(function (e) { say("the agent did not answer: " + e, false); });
        });
      });
    });
  }

  // --- FOR bars: a pending rule's bar fills here, second by second, from its start ----
  function fillBars() {
    var data = document.getElementById("page-data");
    if (!data) return;
    var offset = Number(data.dataset.now) - (data.dataset.loaded || 0);
    var now = Date.now() / 1000 + offset;
    main.querySelectorAll("progress[data-since]").forEach(function (bar) {
      var held = Math.max(0, now - Number(bar.dataset.since));
      var share = Math.min(1, held / Number(bar.dataset.for));
      bar.value = share;
      bar.setAttribute("aria-label", "FOR held: " + Math.round(share * 100) + "%");
    });
  }
  function stampClock() {
    var data = document.getElementById("page-data");
    if (data) data.dataset.loaded = String(Date.now() / 1000);
  }
  setInterval(fillBars, 1000);

  stampClock();
  bindForms();
  drawCharts();
  follow();
})();
