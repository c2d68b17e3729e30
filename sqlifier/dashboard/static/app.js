// The dashboard's script layer: live updates (server-sent events), charts (uPlot),
// confirmed actions, and the theme switch. Pages work without it, read-only.
"use strict";
(function () {
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var message = document.getElementById("message");
  var plots = [];

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
    drawCharts();
  });
  showTheme();

  // --- charts ------------------------------------------------------------------------
  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
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
  function xRange(chart) {
    return function () { return [chart.since, Math.max(chart.until, chart.since + 60)]; };
  }
  function hasValues(list) {
    return (list || []).some(function (v) { return v !== null && v !== undefined; });
  }
  function empty(chart, plot) {
    if (hasValues(chart.v) || hasValues(chart.stable) || hasValues(chart.canary)) return false;
    plot.textContent = "no data yet";
    plot.classList.add("empty");
    return true;
  }
  function width(plot) { return Math.max(280, plot.clientWidth || 400); }
  function axes(unit) {
    var fg = color("--fg"), line = color("--line");
    return [
      { stroke: fg, grid: { stroke: line }, ticks: { stroke: line } },
      { stroke: fg, grid: { stroke: line }, ticks: { stroke: line }, values: format(unit), size: 70 }
    ];
  }
  function thresholdsAndFirings(chart) {
    return function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.lineWidth = 1.5 * devicePixelRatio;
      (chart.thresholds || []).forEach(function (th) {
        var y = u.valToPos(th.value, "y", true);
        ctx.strokeStyle = color("--bad");
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
      });
      ctx.setLineDash([]);
      (chart.firings || []).forEach(function (f) {
        var x = u.valToPos(f.t, "x", true);
        ctx.fillStyle = color("--warn");
        ctx.beginPath(); ctx.arc(x, u.bbox.top + 6 * devicePixelRatio, 5 * devicePixelRatio, 0, 2 * Math.PI); ctx.fill();
      });
      ctx.restore();
    };
  }
  function serviceChart(chart, plot) {
    if (empty(chart, plot)) return null;
    var values = chart.v.slice();
    var range = null;
    if (chart.thresholds && chart.thresholds.length) {
      var all = values.concat(chart.thresholds.map(function (th) { return th.value; }));
      var hi = Math.max.apply(null, all), lo = Math.min.apply(null, all.concat([0]));
      range = [lo, hi * 1.1 || 1];
    }
    var opts = {
      width: width(plot), height: 180, axes: axes(chart.unit),
      scales: { x: { time: true, range: xRange(chart) }, y: range ? { range: range } : {} },
      series: [{}, { label: chart.title, stroke: color("--accent"), width: 1.5 }],
      hooks: { draw: [thresholdsAndFirings(chart)] }
    };
    return new uPlot(opts, [chart.t, values], plot);
  }
  function trackChart(chart, plot) {
    if (empty(chart, plot)) return null;
    var opts = {
      width: width(plot), height: 180, axes: axes(chart.unit),
      scales: { x: { time: true, range: xRange(chart) } },
      series: [{}, { label: "stable", stroke: color("--stable"), width: 1.5, spanGaps: true },
               { label: "canary", stroke: color("--canary"), width: 1.5, spanGaps: true }]
    };
    return new uPlot(opts, [chart.t, chart.stable, chart.canary], plot);
  }
  function doraChart(trend, name, plot) {
    var xs = trend.map(function (w) { return w.until; });
    var ys = trend.map(function (w) { return w[name]; });
    var opts = {
      width: width(plot), height: 160, axes: axes(""), scales: { x: { time: true } },
      series: [{}, { label: name.replace(/_/g, " "), stroke: color("--accent"), width: 1.5, spanGaps: true,
                     points: { show: true } }]
    };
    return new uPlot(opts, [xs, ys], plot);
  }
  function drawCharts() {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    if (typeof uPlot === "undefined") return;
    var data = pageData();
    if (!data) return;
    var page = document.body.dataset.page;
    main.querySelectorAll("figure.chart").forEach(function (figure) {
      var index = Number(figure.dataset.chart);
      var plot = figure.querySelector(".plot");
      var made = null;
      if (page === "service" && data[index]) made = serviceChart(data[index], plot);
      else if (page === "deploys" && data[index]) made = trackChart(data[index], plot);
      else if (page === "dora" && data.names) made = doraChart(data.trend, data.names[index], plot);
      plot.dataset.drawn = "1";
      if (made) plots.push(made);
    });
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
