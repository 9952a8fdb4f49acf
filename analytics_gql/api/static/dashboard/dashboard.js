// The dashboard (api/dashboard.py): one GraphQL document per view, then one for the previous period's series.
// State lives in the query string (?range=7d&tz=UTC&country=KE...), so a view can be shared; a typed-in key in
// sessionStorage (this tab only). Talks only to POST /graphql on this origin (CSP connect-src 'self').
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("dashboard-config").textContent);
  var form = document.getElementById("controls");
  var statusEl = document.getElementById("status");
  var DIMENSIONS = ["BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"];
  var FILTERS = ["blog", "author", "country", "viewerCountry"];
  var CODES = { country: true, viewerCountry: true };
  var DAY_MS = 86400000;
  var PRESETS = {
    "24h": { ms: DAY_MS, granularity: "HOUR" },
    "7d": { ms: 7 * DAY_MS, granularity: "HOUR" },
    "30d": { ms: 30 * DAY_MS, granularity: "DAY" },
    "12m": { months: 12, granularity: "WEEK" }
  };
  var KEY_STORE = "analytics-gql.dashboard.key";
  var chart = null;
  var generation = 0;
  var answered = 0;  // views shown or refused so far (document.body.dataset.answers: tests wait on it)

  var QUERY = [
    "query Dashboard($r: TimeRange!, $f: ViewFilter, $tz: String, $g: Granularity!) {",
    DIMENSIONS.map(function (d) {
      return "  " + d + ": top(dimension: " + d + ", range: $r, filter: $f, timeZone: $tz, limit: 10, " +
        "compare: PREVIOUS_PERIOD) { ...Top }";
    }).join("\n"),
    "  series: performance(granularity: $g, range: $r, filter: $f, timeZone: $tz) {",
    "    points { periodStart label views blogsCreated partial } meta { asOf watermark } }",
    "}",
    "fragment Top on TopResult { totalViews totalReaders otherViews",
    "  nodes { rank key label views readers share previousViews change } comparison { start end totalViews } }"
  ].join("\n");
  var PREVIOUS = "query DashboardPrevious($r: TimeRange!, $f: ViewFilter, $tz: String, $g: Granularity!) {\n" +
    "  series: performance(granularity: $g, range: $r, filter: $f, timeZone: $tz) {\n" +
    "    points { periodStart views blogsCreated } }\n" +
    "  readers: top(dimension: BLOG, range: $r, filter: $f, timeZone: $tz, limit: 1) { totalReaders } }";

  // ------------------------------------------------------------------ state <-> URL <-> form

  function readState() {
    var q = new URLSearchParams(window.location.search);
    var s = { range: q.get("range") || "30d", start: q.get("start") || "", end: q.get("end") || "",
      tz: q.get("tz") || config.defaultZone };
    if (!(s.range in PRESETS) && s.range !== "custom") { s.range = "30d"; }
    FILTERS.forEach(function (f) { s[f] = q.get(f) || ""; });
    return s;
  }

  function writeState(s) {
    var q = new URLSearchParams();
    q.set("range", s.range);
    if (s.range === "custom") { q.set("start", s.start); q.set("end", s.end); }
    q.set("tz", s.tz);
    FILTERS.forEach(function (f) { if (s[f]) { q.set(f, s[f]); } });
    var url = window.location.pathname + "?" + q.toString();
    if (url !== window.location.pathname + window.location.search) { window.history.pushState(null, "", url); }
  }

  function fillForm(s) {
    form.elements.range.value = s.range;
    form.elements.start.value = s.start;
    form.elements.end.value = s.end;
    form.elements.tz.value = s.tz;
    FILTERS.forEach(function (f) { form.elements[f].value = s[f]; });
    form.classList.toggle("is-custom", s.range === "custom");
    if (FILTERS.some(function (f) { return s[f]; })) { form.querySelector(".filters").open = true; }
  }

  function formState() {
    var s = { range: form.elements.range.value || "30d", start: form.elements.start.value,
      end: form.elements.end.value, tz: form.elements.tz.value.trim() || config.defaultZone };
    FILTERS.forEach(function (f) { s[f] = form.elements[f].value.trim(); });
    return s;
  }

  // ------------------------------------------------------------------ the question

  function nextDay(isoDate) {
    var d = new Date(isoDate + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + 1);
    return d.toISOString().slice(0, 10);
  }

  // The range as the API takes it: presets end now (millisecond precision), custom dates are midnights in the
  // view's zone and include their last day.
  function rangeOf(s, now) {
    if (s.range === "custom") {
      if (!s.start || !s.end) { throw new Error("choose both dates of the custom range"); }
      if (s.end < s.start) { throw new Error("the custom range ends before it starts"); }
      var days = (Date.parse(nextDay(s.end)) - Date.parse(s.start)) / DAY_MS;
      var granularity = days <= 3 ? "HOUR" : days <= 92 ? "DAY" : days <= 2 * 366 ? "WEEK" : "MONTH";
      return { range: { start: s.start, end: nextDay(s.end) }, granularity: granularity };
    }
    var p = PRESETS[s.range];
    var start = new Date(now);
    if (p.ms) { start = new Date(now - p.ms); } else { start.setUTCMonth(start.getUTCMonth() - p.months); }
    return { range: { start: start.toISOString(), end: new Date(now).toISOString() }, granularity: p.granularity };
  }

  function filterOf(s) {
    var parts = [];
    FILTERS.forEach(function (f) {
      var values = s[f].split(",").map(function (v) { return v.trim(); }).filter(Boolean);
      if (CODES[f]) { values = values.map(function (v) { return v.toUpperCase(); }); }
      if (values.length) { var atom = {}; atom[f] = { in: values }; parts.push(atom); }
    });
    if (!parts.length) { return null; }
    return parts.length === 1 ? parts[0] : { and: parts };
  }

  function storedKey() {
    try { return window.sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }

  function post(query, variables) {
    var headers = { "Content-Type": "application/json" };
    var key = storedKey();
    if (key) { headers.Authorization = "Bearer " + key; }
    return fetch(config.endpoint, { method: "POST", headers: headers, credentials: "omit",
      body: JSON.stringify({ query: query, variables: variables }) })
      .then(function (r) {
        return r.json().then(function (body) {
          if (body.errors && body.errors.length) {
            var e = body.errors[0];
            var err = new Error(e.message);
            err.code = e.extensions && e.extensions.code;
            throw err;
          }
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return body.data;
        });
      });
  }

  // ------------------------------------------------------------------ rendering

  var number = new Intl.NumberFormat("en-US");
  var compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

  function percent(pct) {
    var text = Math.abs(pct) >= 1000 ? compact.format(pct) : pct.toFixed(1);
    return (pct > 0 ? "+" : "") + text + "%";
  }

  function change(now, before) {
    if (!before) { return now ? "new: nothing in the previous period" : "no views in either period"; }
    var pct = (now - before) / before * 100;
    var sign = pct > 0 ? "▲ " : pct < 0 ? "▼ " : "";
    return sign + percent(pct) + " vs " + number.format(before) + " in the previous period";
  }

  function setTotal(id, now, before) {
    var box = document.getElementById(id);
    box.querySelector(".value").textContent = number.format(now);
    box.querySelector(".change").textContent = change(now, before);
    box.dataset.value = String(now);
    box.dataset.previous = String(before);
    box.classList.toggle("up", now > before);
    box.classList.toggle("down", now < before);
  }

  function renderTop(dimension, result) {
    var list = document.querySelector("#top-" + dimension + " ol");
    list.textContent = "";
    if (!result.nodes.length) {
      var empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "no views";
      list.appendChild(empty);
    }
    result.nodes.forEach(function (n) {
      var li = document.createElement("li");
      li.dataset.key = n.key;
      li.dataset.views = String(n.views);
      li.dataset.readers = String(n.readers);
      var bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (n.share * 100).toFixed(2) + "%";
      var label = document.createElement("span");
      label.className = "label";
      label.textContent = n.label;
      label.title = n.key;
      var views = document.createElement("span");
      views.className = "views";
      views.textContent = number.format(n.views) + " · " + (n.share * 100).toFixed(1) + "% · " +
        number.format(n.readers) + (n.readers === 1 ? " reader" : " readers");
      var delta = document.createElement("span");
      delta.className = "delta";
      delta.textContent = n.change === null ? (n.previousViews ? "" : "new") : percent(n.change);
      li.append(bar, label, views, delta);
      list.appendChild(li);
    });
  }

  // How much of the chart's canvas is painted (for the browser test and for a blank chart warning).
  function ink(canvas) {
    try {
      var ctx = canvas.getContext("2d");
      var px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      var painted = 0;
      for (var i = 3; i < px.length; i += 4) { if (px[i] !== 0) { painted += 1; } }
      return painted;
    } catch (e) { return -1; }
  }

  // uPlot draws after its constructor returns: the view counts as shown once the chart is on its canvas.
  function renderChart(points, previous, drawn) {
    var box = document.getElementById("chart");
    var xs = points.map(function (p) { return Date.parse(p.periodStart) / 1000; });
    var now = points.map(function (p) { return p.views; });
    var before = points.map(function (_p, i) { return i < previous.length ? previous[i].views : null; });
    var width = Math.max(280, box.clientWidth || 600);
    var opts = {
      width: width, height: width < 500 ? 220 : 300,
      scales: { x: { time: true } },
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: [function (u) {
        box.dataset.ink = String(ink(u.ctx.canvas));
        if (drawn) { var done = drawn; drawn = null; done(); }
      }] },
      series: [{}, { label: "this period", stroke: "#1f6feb", width: 2, fill: "rgba(31,111,235,0.12)" },
        { label: "previous period", stroke: "#999", width: 1.5, dash: [6, 4] }],
      axes: [{}, { size: 60, values: function (_u, ticks) { return ticks.map(function (t) { return number.format(t); }); } }]
    };
    if (chart) { chart.destroy(); }
    box.textContent = "";
    box.dataset.points = String(xs.length);
    box.dataset.ink = "0";
    chart = new window.uPlot(opts, [xs, now, before], box);
    document.querySelector(".chart-box .legend").textContent = "— this period  ┄ previous period";
  }

  function render(data, previous, previousReaders, drawn) {
    var top = data.BLOG;
    setTotal("total-views", top.totalViews, top.comparison.totalViews);
    setTotal("total-readers", top.totalReaders, previousReaders);
    var created = data.series.points.reduce(function (a, p) { return a + p.blogsCreated; }, 0);
    var before = previous.reduce(function (a, p) { return a + p.blogsCreated; }, 0);
    setTotal("total-created", created, before);
    DIMENSIONS.forEach(function (d) { renderTop(d, data[d]); });
    renderChart(data.series.points, previous, drawn);
    document.getElementById("meta").textContent = "as of " + data.series.meta.asOf + " · previous period " +
      top.comparison.start + " – " + top.comparison.end;
  }

  function show(s) {
    var mine = ++generation;
    var question;
    try { question = rangeOf(s, Date.now()); } catch (e) { statusEl.textContent = e.message; return; }
    var variables = { r: question.range, f: filterOf(s), tz: s.tz, g: question.granularity };
    document.body.dataset.question = JSON.stringify(variables);  // what is shown (tests ask the API the same)
    document.body.dataset.state = "loading";
    statusEl.textContent = "Loading…";
    post(QUERY, variables).then(function (data) {
      var cmp = data.BLOG.comparison;
      var prevVars = { r: { start: cmp.start, end: cmp.end }, f: variables.f, tz: s.tz, g: question.granularity };
      return post(PREVIOUS, prevVars).then(function (prev) {
        return [data, prev.series.points, prev.readers.totalReaders];
      });
    }).then(function (both) {
      if (mine !== generation) { return; }
      render(both[0], both[1], both[2], function () {
        if (mine !== generation) { return; }
        statusEl.textContent = "";
        document.body.dataset.state = "ready";
        document.body.dataset.answers = String(++answered);
      });
      document.body.dataset.shown = window.location.search;
    }).catch(function (e) {
      if (mine !== generation) { return; }
      document.body.dataset.state = "error";
      document.body.dataset.answers = String(++answered);
      if (e.code === "UNAUTHENTICATED" || e.code === "FORBIDDEN") { form.querySelector(".key").hidden = false; }
      statusEl.textContent = (e.code ? e.code + ": " : "") + e.message;
    });
  }

  // ------------------------------------------------------------------ wiring

  form.addEventListener("change", function (ev) {
    if (ev.target.name === "range") { form.classList.toggle("is-custom", ev.target.value === "custom"); }
    if (ev.target.name === "range" && ev.target.value !== "custom") { form.requestSubmit(); }
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var key = form.elements.key.value.trim();
    if (key) {
      try { window.sessionStorage.setItem(KEY_STORE, key); } catch (e) { /* private mode: this page only */ }
      form.elements.key.value = "";
    }
    var s = formState();
    writeState(s);
    show(s);
  });
  window.addEventListener("popstate", function () { var s = readState(); fillForm(s); show(s); });
  window.addEventListener("resize", function () {
    var box = document.getElementById("chart");
    if (chart && box.clientWidth) { chart.setSize({ width: box.clientWidth, height: box.clientWidth < 500 ? 220 : 300 }); }
  });

  ["UTC", "Europe/London", "Europe/Berlin", "Africa/Nairobi", "Asia/Kolkata", "America/New_York",
    "America/Los_Angeles", "Australia/Sydney"].forEach(function (z) {
    var o = document.createElement("option");
    o.value = z;
    document.getElementById("zones").appendChild(o);
  });
  if (config.keysRequired) { form.querySelector(".key").hidden = false; }
  var initial = readState();
  fillForm(initial);
  show(initial);
}());
