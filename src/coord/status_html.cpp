// The HTML of the coordinator's status page (status_page.h): one self-contained page, no outside
// resources. The server puts the status at the time of the request in place of STATUS_JSON, so
// the page shows the run as soon as it loads; then it fetches status.json every 2 s (with the
// page's own ?token=, when it has one) and redraws. Names are set as text, never as HTML.
#include "status_page.h"

namespace loco {

const char* status_page_html() {
  return R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loco status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .4em; }
.summary span { display: inline-block; margin-right: 1.6em; }
.summary b { font-size: 1.15em; }
.bar { height: 6px; background: #ddd; border-radius: 3px; margin: .5em 0 1em; max-width: 760px; }
.bar div { height: 100%; background: #2a7ae2; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0 1.2em; }
th, td { padding: .25em .9em; border-bottom: 1px solid #e3e3e3; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2), td.doing, th.doing { text-align: left; }
td.doing.training { color: #2a7ae2; } td.doing.pushed { color: #1a8a3a; }
#state { color: #888; } #state.gone { color: #c33; font-weight: bold; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
.legend span { margin-right: 1.5em; } .sw { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: .3em; }
</style></head>
<body>
<h1>loco run status <span id="state"></span></h1>
<div class="summary">
  <span>mode <b id="mode">?</b></span>
  <span>round <b id="round">?</b> of <b id="total">?</b></span>
  <span>tokens <b id="tokens">?</b></span>
  <span>bytes up <b id="up">?</b> / down <b id="down">?</b></span>
  <span>val loss <b id="val">-</b></span>
  <span>up for <b id="wall">?</b></span>
</div>
<div class="bar"><div id="progress" style="width:0"></div></div>
<h2 style="font-size:1.05em">Members (<span id="count">0</span>)</h2>
<table><thead><tr><th>id</th><th>name</th><th>shard</th><th class="doing">doing</th>
<th>last loss</th><th>bytes up</th><th>bytes down</th><th>last heard</th></tr></thead>
<tbody id="members"></tbody></table>
<h2 style="font-size:1.05em">Loss by round</h2>
<div class="legend"><span><i class="sw" style="background:#2a7ae2"></i>training loss (pushes)</span>
<span><i class="sw" style="background:#e2622a"></i>val loss (coordinator)</span></div>
<svg id="curve" width="760" height="300" viewBox="0 0 760 300"></svg>
<script id="initial" type="application/json">STATUS_JSON</script>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const url = "status.json" + (token ? "?token=" + encodeURIComponent(token) : "");
const $ = id => document.getElementById(id);
function bytes(n) {
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1000 && i < 4) { n /= 1000; i++; }
  return i ? n.toFixed(1) + " " + u[i] : n + " B";
}
function dur(s) {
  if (s < 60) return s.toFixed(1) + "s";
  s = Math.round(s);
  return s < 3600 ? Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s"
                  : Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
}
function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function drawCurve(train, val) {
  const el = $("curve"); el.replaceChildren();
  const W = 760, H = 300, L = 56, R = 16, T = 12, B = 34;
  const all = train.concat(val);
  if (!all.length) { el.appendChild(svg("text", {x: L, y: H / 2}, "no round closed yet")); return; }
  let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => T + (y1 - y) / (y1 - y0) * (H - T - B);
  el.appendChild(svg("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#ccc"}));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    el.appendChild(svg("line", {x1: L, x2: W - R, y1: Y(y), y2: Y(y), stroke: "#eee"}));
    el.appendChild(svg("text", {x: L - 6, y: Y(y) + 4, "text-anchor": "end"}, y.toFixed(3)));
  }
  for (let i = 0; i <= 4; i++) {
    const x = x0 + (x1 - x0) * i / 4;
    el.appendChild(svg("text", {x: X(x), y: H - B + 16, "text-anchor": "middle"}, Math.round(x)));
  }
  el.appendChild(svg("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle"}, "round"));
  for (const [pts, color] of [[train, "#2a7ae2"], [val, "#e2622a"]]) {
    if (!pts.length) continue;
    el.appendChild(svg("polyline", {fill: "none", stroke: color, "stroke-width": 2,
      points: pts.map(p => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ")}));
    if (pts.length <= 60)
      for (const p of pts) el.appendChild(svg("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color}));
  }
}
function render(s) {
  $("mode").textContent = s.mode;
  $("round").textContent = s.round;
  $("total").textContent = s.total_rounds;
  $("tokens").textContent = s.tokens.toLocaleString("en");
  $("up").textContent = bytes(s.bytes_up);
  $("down").textContent = bytes(s.bytes_down);
  $("val").textContent = s.last_val_loss === null ? "-" : s.last_val_loss.toFixed(4);
  $("wall").textContent = dur(s.wall_s);
  $("progress").style.width = (s.total_rounds ? 100 * s.round / s.total_rounds : 0) + "%";
  $("count").textContent = s.members.length;
  const rows = s.members.map(m => {
    const tr = document.createElement("tr");
    const cells = [m.worker_id, m.name, m.shard, m.doing, m.last_loss ? m.last_loss.toFixed(4) : "-",
                   bytes(m.bytes_up), bytes(m.bytes_down), dur(m.seen_s_ago) + " ago"];
    cells.forEach((c, i) => {
      const td = document.createElement("td"); td.textContent = c;
      if (i === 3) td.className = "doing " + c.split(" ")[0];
      tr.appendChild(td);
    });
    return tr;
  });
  $("members").replaceChildren(...rows);
  drawCurve(s.train_losses, s.val_losses);
  $("state").className = ""; $("state").textContent = "live, " + new Date().toLocaleTimeString("en-GB");
}
async function refresh() {
  try {
    const r = await fetch(url, {cache: "no-store"});
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    render(await r.json());
  } catch (e) {
    $("state").className = "gone";
    $("state").textContent = "coordinator not answering (" + e.message.split("\n")[0] + ")";
  }
}
const initial = JSON.parse($("initial").textContent);
if (initial) render(initial);
setInterval(refresh, 2000);
</script>
</body></html>
)HTML";
}

}  // namespace loco
