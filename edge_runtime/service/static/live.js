// The live page: polls /api/live twice a second and draws on two canvases (no library, works offline).
// What it drew is kept in window.liveState and on #chart's data-* attributes, so a test can read it.
"use strict";
const POLL_MS = 500;
const POINTS = 300;
const state = { updates: 0, stream: null, points: 0, spans: [], scores: 0, error: null, previous: null };
// the drawn window; each poll asks only for samples after its newest t and appends them
const buffer = { stream: null, t: [], value: [], expected: [], score: [] };
window.liveState = state;

const $ = (id) => document.getElementById(id);
const select = $("stream");
select.addEventListener("change", () => { state.stream = select.value; buffer.stream = null; poll(); });

function scale(lo, hi, from, to) {
  const span = hi - lo || 1;
  return (v) => from + (v - lo) / span * (to - from);
}

function drawLine(ctx, xs, ys, x, y, color, dots) {
  ctx.strokeStyle = ctx.fillStyle = color;
  ctx.beginPath();
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (ys[i] === null) { pen = false; continue; }
    if (dots) { ctx.fillRect(x(xs[i]) - 1.5, y(ys[i]) - 1.5, 3, 3); continue; }
    pen ? ctx.lineTo(x(xs[i]), y(ys[i])) : ctx.moveTo(x(xs[i]), y(ys[i]));
    pen = true;
  }
  ctx.stroke();
}

function spansOn(ctx, spans, x, height) {
  ctx.fillStyle = "rgba(214, 39, 40, 0.2)";
  for (const [a, b] of spans) ctx.fillRect(x(a), 0, Math.max(x(b) - x(a), 3), height);
}

function merge(live) {
  const columns = ["t", "value", "expected", "score"];
  if (live.full || buffer.stream !== live.stream) {
    buffer.stream = live.stream;
    for (const c of columns) buffer[c] = live[c];
  } else {
    for (const c of columns) buffer[c] = buffer[c].concat(live[c]).slice(-POINTS);
  }
  return { ...live, ...Object.fromEntries(columns.map((c) => [c, buffer[c]])) };
}

function draw(live) {
  const chart = $("chart"), ctx = chart.getContext("2d"), W = chart.width, H = chart.height;
  ctx.clearRect(0, 0, W, H);
  const t = live.t, tEnd = t.length ? t[t.length - 1] : 0, tStart = t.length ? t[0] : 0;
  const step = t.length > 1 ? (tEnd - tStart) / (t.length - 1) : 1;
  const x = scale(tStart, tEnd + step, 40, W - 10);
  const known = live.value.concat(live.expected, [live.next_forecast]).filter((v) => v !== null);
  if (!known.length) return;
  const y = scale(Math.min(...known), Math.max(...known), H - 20, 10);
  // an alarm still open runs to the newest sample; a span from before the window starts at its left edge
  const spans = live.events.map(([a, b]) => [Math.max(a, tStart), b === null ? tEnd : b]);
  spansOn(ctx, spans, x, H);
  drawLine(ctx, t, live.value, x, y, "#1f77b4", false);
  drawLine(ctx, t, live.expected, x, y, "#ff7f0e", false);
  if (live.next_forecast !== null) drawLine(ctx, [tEnd + step], [live.next_forecast], x, y, "#ff7f0e", true);
  ctx.fillStyle = "#555";
  ctx.fillText(Math.max(...known).toPrecision(4), 2, 12);
  ctx.fillText(Math.min(...known).toPrecision(4), 2, H - 22);

  const sc = $("score"), sctx = sc.getContext("2d"), SH = sc.height;
  sctx.clearRect(0, 0, W, SH);
  const scores = live.score.filter((v) => v !== null);
  // scaled to 3x the threshold (a spike's score of 100 would flatten the rest); higher scores are clipped
  const top = live.threshold !== null ? 3 * live.threshold : Math.max(1, ...scores) * 1.1;
  const ys = scale(0, top, SH - 5, 5);
  spansOn(sctx, spans, x, SH);
  drawLine(sctx, t, live.score.map((v) => (v === null ? null : Math.min(v, top))), x, ys, "#2ca02c", false);
  if (live.threshold !== null) {
    sctx.setLineDash([6, 4]);
    drawLine(sctx, [tStart, tEnd + step], [live.threshold, live.threshold], x, ys, "#d62728", false);
    sctx.setLineDash([]);
  }
  state.points = live.value.filter((v) => v !== null).length;
  state.scores = scores.length;
  state.spans = spans;
  chart.dataset.points = state.points;
  chart.dataset.spans = JSON.stringify(spans);
  chart.dataset.stream = live.stream;
}

function fmt(v, unit = "", digits = 1) { return v === null || v === undefined ? "–" : v.toFixed(digits) + unit; }

function showHealth(h) {
  const prev = state.previous, dt = prev ? h.now_unix - prev.now_unix : 0;
  const rate = (key) => (prev && dt > 0 ? (h[key] - prev[key]) / dt : null);
  const rejected = Object.entries(h.rejected).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const cells = [
    ["samples/s", fmt(rate("samples"))], ["predictions/s", fmt(rate("predictions"))],
    ["anomaly events", h.anomalies], ["streams", h.streams], ["queue", h.queue], ["rejected", rejected],
    ["step p50 / p99", `${fmt(h.step_latency_us.p50, " µs")} / ${fmt(h.step_latency_us.p99, " µs")}`],
    ["sample→forecast p50 / p99", `${fmt(h.e2e_latency_us.p50 && h.e2e_latency_us.p50 / 1000, " ms", 2)} / ` +
      `${fmt(h.e2e_latency_us.p99 && h.e2e_latency_us.p99 / 1000, " ms", 2)}`],
    ["snapshot age", fmt(h.snapshot_age_s, " s")], ["RSS", fmt(h.rss_bytes && h.rss_bytes / 1048576, " MB")],
    ["uptime", fmt(h.uptime_s, " s", 0)],
  ];
  $("health").innerHTML = cells.map(([k, v]) => `<div>${k}: <span>${v}</span></div>`).join("");
  $("bundle").textContent = `${h.bundle} (${h.variant})`;
  state.previous = h;
}

function showStreams(streams) {
  if (select.options.length === streams.length) return;
  select.innerHTML = streams.map((s) => `<option>${s}</option>`).join("");  // ids are [A-Za-z0-9_.:-] only
  if (state.stream === null && streams.length) state.stream = streams[0];
  select.value = state.stream;
}

async function poll() {
  try {
    let query = state.stream === null ? "" : `stream=${encodeURIComponent(state.stream)}&`;
    if (buffer.stream !== null && buffer.stream === state.stream && buffer.t.length) {
      query += `after=${buffer.t[buffer.t.length - 1]}&`;
    }
    const reply = await fetch(`api/live?${query}n=${POINTS}`, { cache: "no-store" });
    const data = await reply.json();
    showStreams(data.streams);
    showHealth(data.health);
    if (data.live) draw(merge(data.live));
    state.updates += 1;
    state.error = null;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    state.error = String(e);
    $("updated").textContent = `no answer from the service (${e})`;
  }
}

poll();
setInterval(poll, POLL_MS);
