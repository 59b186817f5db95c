/* memlens flame graph page: draws the figures of the
   <script id="memlens-data"> element (see memlens/_flamegraph.py for their
   encoding). Icicles in SVG, frames narrower than a pixel left out with
   their subtrees, so that a view costs what it shows, not what the
   snapshot holds. */
(function () {
  "use strict";

  var KIB = 1024, MIB = 1048576;
  var ROW = 18, MIN_WIDTH = 1, CHAR = 6.6;
  var SVG = "http://www.w3.org/2000/svg";
  var started = performance.now();
  var DATA = JSON.parse(document.getElementById("memlens-data").textContent);
  var files = DATA.files, frameFile = DATA.file, frameLine = DATA.line,
      frameText = DATA.text;
  var BASE = DATA.digits.length, DIGIT = new Int32Array(128);
  (function () {
    for (var i = 0; i < BASE; i++) { DIGIT[DATA.digits.charCodeAt(i)] = i; }
  })();

  /* A packed column ({w, s}: fixed-width numbers in DATA.digits, see
     _pack), less `shift`. */
  function unpack(packed, shift) {
    var w = packed.w, s = packed.s, n = s.length / w;
    var out = new Int32Array(n), i, k, v, at = 0;
    for (i = 0; i < n; i++) {
      for (v = 0, k = 0; k < w; k++) { v = v * BASE + DIGIT[s.charCodeAt(at++)]; }
      out[i] = v - shift;
    }
    return out;
  }

  /* n bytes in `unit`s with `decimals` decimals, rounded as Python's
     format() rounds them: an exact half goes to the even digit (toFixed
     would take the larger: 256 bytes are 0.2 KiB there, 0.3 here). */
  function fixed(n, unit, decimals) {
    var scale = Math.pow(10, decimals), q = Math.abs(n) * scale;
    var whole = Math.floor(q / unit), rest = q - whole * unit;
    if (2 * rest > unit || (2 * rest === unit && whole % 2 === 1)) {
      whole += 1;
    }
    return (n < 0 ? "-" : "") + (whole / scale).toFixed(decimals);
  }
  /* As memlens._report.human and kib. */
  function human(n) {
    if (Math.abs(n) < KIB) { return n + " B"; }
    if (Math.abs(n) < MIB) { return fixed(n, KIB, 1) + " KiB"; }
    return fixed(n, MIB, 2) + " MiB";
  }
  function kib(n) { return fixed(n, KIB, 1); }
  function percent(part, whole) {
    return whole > 0 ? (100 * part / whole).toFixed(1) + "%" : "-";
  }
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;")
      .replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function basename(path) {
    var cut = path.lastIndexOf("/");
    return cut < 0 ? path : path.slice(cut + 1);
  }
  /* A file as the table shows it: from its package on for installed
     packages and the standard library, else whole. */
  function shown(path) {
    var m = /\/(?:site|dist)-packages\/(.+)$/.exec(path) ||
      /\/lib\/python\d+\.\d+\/(.+)$/.exec(path);
    return m ? m[1] : path;
  }
  function label(frame) {
    return frame < 0 ? "all" :
      basename(files[frameFile[frame]]) + ":" + frameLine[frame];
  }
  function where(frame) {
    return frame < 0 ? "all" :
      files[frameFile[frame]] + ":" + frameLine[frame];
  }
  function hue(frame) {
    var name = files[frameFile[frame]], h = 0, i;
    for (i = 0; i < name.length; i++) {
      h = (h * 31 + name.charCodeAt(i)) | 0;
    }
    return 12 + Math.abs(h) % 36;
  }
  function el(tag, attrs, html) {
    var node = document.createElement(tag), key;
    for (key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key)) {
        node.setAttribute(key, attrs[key]);
      }
    }
    if (html !== undefined) { node.innerHTML = html; }
    return node;
  }

  /* ---- search ----------------------------------------------------------- */

  var matches = null;   /* per frame: whether it matches, or null */

  function matcher(query) {
    var test;
    query = query.trim();
    if (!query) { return null; }
    if (query.length > 2 && query[0] === "/" &&
        query[query.length - 1] === "/") {
      try {
        var re = new RegExp(query.slice(1, -1), "i");
        test = function (s) { return re.test(s); };
      } catch (e) {
        return "bad";
      }
    } else {
      var needle = query.toLowerCase();
      test = function (s) { return s.toLowerCase().indexOf(needle) >= 0; };
    }
    var out = new Uint8Array(frameLine.length), i;
    for (i = 0; i < frameLine.length; i++) {
      out[i] = test(where(i) + " " + frameText[i]) ? 1 : 0;
    }
    return out;
  }

  /* ---- one icicle ------------------------------------------------------- */

  function Graph(g, box) {
    var i, k, at, p;
    this.g = g;
    this.f = unpack(g.f, 1);
    this.d = unpack(g.d, 0);
    var n = this.f.length;
    this.total = new Float64Array(n);
    this.native = new Float64Array(n);
    this.blocks = new Float64Array(n);
    this.resident = new Float64Array(n);
    this.parent = new Int32Array(n);
    this.end = new Int32Array(n);
    var own = g.own;
    for (k = 0, at = 0; k < own.i.length; k++) {
      at += own.i[k];
      var nat = own.nat ? own.nat[k] : 0;
      this.total[at] += own.py[k] + nat;
      this.native[at] += nat;
      this.blocks[at] += own.n[k];
      this.resident[at] += own.res ? own.res[k] : own.py[k];
    }
    var path = [];
    this.maxDepth = 0;
    for (i = 0; i < n; i++) {
      path.length = this.d[i];
      this.parent[i] = i ? path[this.d[i] - 1] : -1;
      path.push(i);
      this.end[i] = i + 1;
      if (this.d[i] > this.maxDepth) { this.maxDepth = this.d[i]; }
    }
    for (i = n - 1; i > 0; i--) {
      p = this.parent[i];
      this.total[p] += this.total[i];
      this.native[p] += this.native[i];
      this.blocks[p] += this.blocks[i];
      this.resident[p] += this.resident[i];
      if (this.end[i] > this.end[p]) { this.end[p] = this.end[i]; }
    }
    this.zoom = 0;
    this.box = box;
    this.build();
  }

  Graph.prototype.build = function () {
    var g = this.g, self = this;
    var section = el("section", {"class": "graph", id: g.id});
    section.appendChild(el("h2", {}, esc(g.title)));
    g.notes.forEach(function (note) {
      section.appendChild(el("p", {"class": "note"}, esc(note)));
    });
    g.warnings.forEach(function (note) {
      section.appendChild(el("p", {"class": "warning"}, esc(note)));
    });
    var bar = el("div", {"class": "bar"});
    this.reset = el("button", {type: "button", "class": "reset"},
                    "Reset zoom");
    this.reset.disabled = true;
    this.reset.addEventListener("click", function () { self.zoomTo(0); });
    bar.appendChild(this.reset);
    this.crumb = el("span", {"class": "crumb"});
    bar.appendChild(this.crumb);
    this.found = el("span", {"class": "found"});
    bar.appendChild(this.found);
    bar.appendChild(el("span", {"class": "legend"},
      "<i class='py'></i>Python allocators" +
      (g.native ? " <i class='nat'></i>native (malloc, mmap)" : "") +
      " <i class='hit'></i>search match"));
    section.appendChild(bar);
    this.holder = el("div", {"class": "flame"});
    section.appendChild(this.holder);
    this.holder.addEventListener("click", function (event) {
      var i = self.nodeAt(event.target);
      if (i >= 0) { self.zoomTo(i); }
    });
    this.holder.addEventListener("mousemove", function (event) {
      self.tip(self.nodeAt(event.target), event);
    });
    this.holder.addEventListener("mouseleave", function () {
      self.tip(-1);
    });
    section.appendChild(this.table());
    this.box.appendChild(section);
  };

  Graph.prototype.nodeAt = function (target) {
    var i = target && target.getAttribute && target.getAttribute("data-i");
    return i === null || i === undefined || i === false ? -1 : +i;
  };

  Graph.prototype.zoomTo = function (i) {
    this.zoom = i;
    this.reset.disabled = i === 0;
    this.draw();
  };

  Graph.prototype.rect = function (out, i, x, y, w, faded) {
    var f = this.f[i], fill, cls = "fr";
    if (faded) {
      cls += " up";
    } else if (matches && f >= 0 && matches[f]) {
      cls += " hit";
    }
    fill = f < 0 ? "hsl(30,20%,80%)" : "hsl(" + hue(f) + ",75%,62%)";
    out.push("<rect class='" + cls + "' data-i='" + i + "' data-bytes='" +
             this.total[i] + "' x='" + x.toFixed(2) + "' y='" + y +
             "' width='" + w.toFixed(2) + "' height='" + (ROW - 1) +
             "' fill='" + fill + "'/>");
    if (this.g.native && this.native[i] > 0 && !faded) {
      var nw = w * this.native[i] / this.total[i];
      out.push("<rect class='nat' data-i='" + i + "' x='" +
               (x + w - nw).toFixed(2) + "' y='" + y + "' width='" +
               nw.toFixed(2) + "' height='" + (ROW - 1) + "'/>");
    }
    if (w > 3 * CHAR + 6) {
      var text = f < 0 ? "all: " + human(this.total[i]) : label(f);
      var room = Math.floor((w - 6) / CHAR);
      if (text.length > room) { text = text.slice(0, room - 1) + "\u2026"; }
      out.push("<text data-i='" + i + "' x='" + (x + 3).toFixed(2) +
               "' y='" + (y + ROW - 5) + "'>" + esc(text) + "</text>");
    }
  };

  Graph.prototype.draw = function () {
    var W = Math.max(this.holder.clientWidth, 200), z = this.zoom;
    var d = this.d, total = this.total, end = this.end, out = [];
    var chain = [], i, deepest = d[z];
    if (total[z] <= 0) {
      this.holder.innerHTML = "<p class='empty'>Nothing was alive.</p>";
      this.drawn = 0;
      return;
    }
    for (i = this.parent[z]; i >= 0; i = this.parent[i]) { chain.push(i); }
    chain.reverse().forEach(function (a) {
      this.rect(out, a, 0, d[a] * ROW, W, true);
    }, this);
    var scale = W / total[z], cursor = [], drawn = 0;
    cursor[d[z]] = 0;
    for (i = z; i < end[z];) {
      var depth = d[i], x = cursor[depth], w = total[i] * scale;
      cursor[depth] = x + w;
      if (w < MIN_WIDTH) { i = end[i]; continue; }
      cursor[depth + 1] = x;
      this.rect(out, i, x, depth * ROW, w, false);
      if (depth > deepest) { deepest = depth; }
      drawn++;
      i++;
    }
    this.drawn = drawn;
    var H = (deepest + 1) * ROW;
    this.holder.innerHTML = "<svg xmlns='" + SVG + "' width='" + W +
      "' height='" + H + "' viewBox='0 0 " + W + " " + H + "'>" +
      out.join("") + "</svg>";
    var names = [];
    for (i = z; i > 0; i = this.parent[i]) { names.push(label(this.f[i])); }
    this.crumb.textContent = z ? "Zoomed on " +
      names.reverse().join(" \u203a ") + " (" + human(total[z]) + ")" : "";
    this.searched();
  };

  /* The bytes under matching frames (each counted once, under its
     outermost match), written beside the graph. */
  Graph.prototype.searched = function () {
    if (!matches || matches === "bad") {
      this.matched = null;
      this.found.textContent = matches === "bad" ? "bad regular expression"
        : "";
      return;
    }
    var sum = 0, i = 0, n = this.f.length;
    while (i < n) {
      if (this.f[i] >= 0 && matches[this.f[i]]) {
        sum += this.total[i];
        i = this.end[i];
      } else {
        i++;
      }
    }
    this.matched = sum;
    this.found.textContent = "Matched: " + human(sum) + " (" +
      percent(sum, this.total[0]) + ")";
  };

  Graph.prototype.tip = function (i, event) {
    var tip = document.getElementById("tip");
    if (i < 0) { tip.hidden = true; return; }
    var f = this.f[i], rows = [
      "<b>" + esc(where(f)) + "</b>",
      f >= 0 && frameText[f] ? "<code>" + esc(frameText[f]) + "</code>" : "",
      human(this.total[i]) + " (" + percent(this.total[i], this.total[0]) +
        " of the total), " + this.blocks[i] + " blocks"];
    if (this.g.native) {
      rows.push("Python " + human(this.total[i] - this.native[i]) +
                ", native " + human(this.native[i]) + ", resident " +
                human(this.resident[i]));
    }
    tip.innerHTML = rows.filter(Boolean).join("<br>");
    tip.hidden = false;
    var x = Math.min(event.clientX + 14,
                     window.innerWidth - tip.offsetWidth - 4);
    tip.style.left = Math.max(x, 0) + "px";
    tip.style.top = (event.clientY + 16) + "px";
  };

  /* ---- the table of the top lines --------------------------------------- */

  Graph.prototype.table = function () {
    var g = this.g, cols = [["#", "rank"], ["line", "where"],
                            ["size (KiB)", "size"]];
    if (g.native) {
      cols.push(["native (KiB)", "native"], ["resident (KiB)", "resident"]);
    }
    cols.push(["blocks", "count"], ["source", "text"]);
    var rows = g.lines.map(function (r, k) {
      return {rank: k + 1, where: shown(files[frameFile[r[0]]]) + ":" +
              frameLine[r[0]], path: where(r[0]), size: r[1], native: r[2],
              count: r[3], resident: r[4], text: frameText[r[0]]};
    });
    var details = el("details", {"class": "top", open: ""});
    details.appendChild(el("summary", {}, "Top lines (" + rows.length +
      (g.rest.lines ? " of " + (rows.length + g.rest.lines) : "") + ")"));
    var table = el("table", {"class": "lines"});
    var head = "<thead><tr>" + cols.map(function (c) {
      return "<th data-key='" + c[1] + "'>" + esc(c[0]) + "</th>";
    }).join("") + "</tr></thead>";
    var numeric = {rank: 1, size: 1, native: 1, resident: 1, count: 1};
    function cell(row, key) {
      var v = row[key];
      if (key === "size" || key === "native" || key === "resident") {
        return "<td class='num'>" + kib(v) + "</td>";
      }
      if (key === "text") { return "<td><code>" + esc(v) + "</code></td>"; }
      if (key === "where") {
        return "<td title='" + esc(row.path) + "'>" + esc(v) + "</td>";
      }
      return "<td" + (numeric[key] ? " class='num'" : "") + ">" + esc(v) +
        "</td>";
    }
    function body() {
      return rows.map(function (row) {
        return "<tr>" + cols.map(function (c) {
          return cell(row, c[1]);
        }).join("") + "</tr>";
      }).join("");
    }
    var foot = g.rest.lines ? "<tfoot><tr><td></td><td>" + g.rest.lines +
      " other lines</td><td class='num'>" + kib(g.rest.size) + "</td>" +
      (g.native ? "<td></td><td class='num'>" + kib(g.rest.resident) +
       "</td>" : "") + "<td></td><td></td></tr></tfoot>" : "";
    table.innerHTML = head + "<tbody>" + body() + "</tbody>" + foot;
    var order = {key: null, down: true};
    table.querySelector("thead").addEventListener("click", function (event) {
      var key = event.target.getAttribute("data-key");
      if (!key) { return; }
      /* A first click sorts figures largest first, text A to Z. */
      order.down = order.key === key ? !order.down : !!numeric[key] &&
        key !== "rank";
      order.key = key;
      rows.sort(function (a, b) {
        var x = a[key], y = b[key];
        var c = numeric[key] ? x - y : (x < y ? -1 : x > y ? 1 : 0);
        if (!c) { c = a.rank - b.rank; return c; }
        return order.down ? -c : c;
      });
      table.querySelector("tbody").innerHTML = body();
      var heads = table.querySelectorAll("th");
      Array.prototype.forEach.call(heads, function (th) {
        th.className = th.getAttribute("data-key") === key ?
          (order.down ? "down" : "up") : "";
      });
    });
    details.appendChild(table);
    return details;
  };

  /* ---- the timeline ----------------------------------------------------- */

  function timeline(t, box) {
    var section = el("section", {"class": "timeline", id: "timeline"});
    section.appendChild(el("h2", {}, "RSS over time"));
    if (t.peak !== null) {
      section.appendChild(el("p", {"class": "note"}, "Peak: " +
        t.peak_mib.toFixed(2) + " MiB at " + t.peak_s.toFixed(3) + " s"));
    }
    var holder = el("div", {"class": "plot"});
    section.appendChild(holder);
    box.appendChild(section);
    function draw() {
      var W = Math.max(holder.clientWidth, 200), H = 160, L = 60, B = 18;
      var n = t.t.length, i, out = [];
      var tmax = 0, mmax = 0;
      for (i = 0; i < n; i++) {
        if (t.t[i] > tmax) { tmax = t.t[i]; }
        if (t.mib[i] > mmax) { mmax = t.mib[i]; }
      }
      t.spans.forEach(function (s) { if (s[2] > tmax) { tmax = s[2]; } });
      tmax = tmax || 1;
      mmax = mmax || 1;
      function X(s) { return L + (W - L - 8) * s / tmax; }
      function Y(m) { return 8 + (H - 8 - B) * (1 - m / mmax); }
      /* FUNC spans in rows below the plot, each in the first free row. */
      var ends = [], spans = [];
      t.spans.forEach(function (s) {
        var r = 0;
        while (r < ends.length && ends[r] > s[1]) { r++; }
        ends[r] = s[2];
        spans.push("<g class='span'><rect x='" + X(s[1]).toFixed(1) +
          "' y='" + (H + 4 + r * 16) + "' width='" +
          Math.max(X(s[2]) - X(s[1]), 1).toFixed(1) + "' height='14'/>" +
          "<text x='" + (X(s[1]) + 2).toFixed(1) + "' y='" +
          (H + 15 + r * 16) + "'>" + esc(s[0]) + "</text><title>" +
          esc(s[0]) + ": " + s[1].toFixed(3) + " s to " +
          s[2].toFixed(3) + " s</title></g>");
      });
      var full = H + ends.length * 16 + (ends.length ? 6 : 0);
      out.push("<line class='axis' x1='" + L + "' y1='" + (H - B) + "' x2='" +
               W + "' y2='" + (H - B) + "'/>");
      out.push("<text class='tick' x='" + (L - 4) + "' y='12' " +
               "text-anchor='end'>" + mmax.toFixed(1) + " MiB</text>");
      out.push("<text class='tick' x='" + (L - 4) + "' y='" + (H - B) +
               "' text-anchor='end'>0</text>");
      out.push("<text class='tick' x='" + L + "' y='" + (H - 4) + "'>0 s" +
               "</text>");
      out.push("<text class='tick' x='" + (W - 8) + "' y='" + (H - 4) +
               "' text-anchor='end'>" + tmax.toFixed(2) + " s</text>");
      var pts = [];
      for (i = 0; i < n; i++) {
        pts.push(X(t.t[i]).toFixed(1) + "," + Y(t.mib[i]).toFixed(1));
      }
      out.push("<polyline class='rss' points='" + pts.join(" ") + "'/>");
      if (t.peak !== null) {
        var px = X(t.t[t.peak]), py = Y(t.mib[t.peak]);
        out.push("<line class='peak' x1='" + px.toFixed(1) + "' y1='8' x2='" +
                 px.toFixed(1) + "' y2='" + (H - B) + "'/>");
        out.push("<circle class='peak' id='peak-mark' cx='" + px.toFixed(1) +
                 "' cy='" + py.toFixed(1) + "' r='4'><title>peak " +
                 t.peak_mib.toFixed(2) + " MiB at " + t.peak_s.toFixed(3) +
                 " s</title></circle>");
      }
      holder.innerHTML = "<svg xmlns='" + SVG + "' width='" + W +
        "' height='" + full + "'>" + out.join("") + spans.join("") + "</svg>";
    }
    draw();
    return draw;
  }

  /* ---- the page --------------------------------------------------------- */

  var report = document.getElementById("report");
  var drawTimeline = DATA.timeline ? timeline(DATA.timeline, report) : null;
  var graphs = DATA.graphs.map(function (g) {
    var graph = new Graph(g, report);
    graph.draw();
    return graph;
  });

  function search(query) {
    matches = matcher(query);
    graphs.forEach(function (graph) { graph.draw(); });
    document.getElementById("matched").textContent =
      matches === "bad" ? "bad regular expression" : "";
  }
  var input = document.getElementById("search");
  input.addEventListener("input", function () { search(input.value); });

  var pending = false;
  window.addEventListener("resize", function () {
    if (pending) { return; }
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      if (drawTimeline) { drawTimeline(); }
      graphs.forEach(function (graph) { graph.draw(); });
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      graphs.forEach(function (graph) { graph.zoomTo(0); });
    }
  });

  /* What scripts driving the page (its tests, the benchmark) read:
     renderMs, from the start of navigation to the first drawing's end;
     paintedMs, to the first frame painted after it. */
  window.memlens = {
    graphs: graphs, human: human, kib: kib, where: where, search: search,
    renderMs: performance.now(), scriptMs: performance.now() - started,
    paintedMs: null
  };
  requestAnimationFrame(function () {
    requestAnimationFrame(function () {
      window.memlens.paintedMs = performance.now();
    });
  });
}());
