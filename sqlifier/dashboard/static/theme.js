// Light or dark before the first paint: the saved choice, else the system's.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("sqlifier-theme"); } catch (e) { /* private mode */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
