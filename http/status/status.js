// The status page: polls the server's JSON endpoints once a second and
// redraws. No framework and no build step: this file is served as it is.
"use strict";

const HISTORY = 300; // seconds of hit ratio kept for the chart
const MAX_ENTRIES_SHOWN = 200;
const ratios = []; // per-second hit ratios, oldest first (null: no reads)
let previous; // the last /-/stats answer, for per-second differences

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

/** The origin's health in a line: the breaker, and what the shield spared it. */
function describeOrigin(origin) {
  const { breaker } = origin;
  const health = breaker.state === "closed"
    ? "healthy"
    : `failing: breaker ${breaker.state} after ${breaker.consecutiveFailures} failures, ` +
      `${breaker.refused} requests kept from it`;
  return `${health}; ${origin.fresh} answers within their lifetime, ` +
    `${origin.revalidations} revalidations (${origin.notModified} not modified), ` +
    `${origin.stale} stale answers, ${origin.inFlight} requests in flight`;
}

/** What is wrong with the cache directory, if anything: the first thing an operator must see. */
function cacheState(cache) {
  const problems = [];
  if (cache.unavailable) problems.push(`no cache: ${cache.unavailable}`);
  if (cache.degraded) {
    problems.push(
      `DEGRADED (${cache.degraded}): holding at most ${formatBytes(cache.effectiveCapacity)}`,
    );
  }
  if (cache.writeFailures > 0) problems.push(`${cache.writeFailures} failed writes`);
  if (cache.adopting > 0) {
    problems.push(`${cache.adopting} entries of the previous run still being checked`);
  }
  return problems.join("; ");
}

function drawStats(stats) {
  const { capacity, used, entries, policy } = stats.cache;
  const share = capacity === 0 ? 0 : used / capacity;
  document.getElementById("version").textContent = `version ${stats.version}`;
  document.getElementById("fill-bar").style.width = `${(share * 100).toFixed(1)}%`;
  document.getElementById("fill").textContent = `${formatBytes(used)} of ${
    formatBytes(capacity)
  } (${(share * 100).toFixed(1)}%), ${entries} entries, policy ${policy}`;
  document.getElementById("cache-state").textContent = cacheState(stats.cache);
  const reads = stats.hits + stats.misses + stats.bypasses;
  document.getElementById("ratio").textContent = reads === 0
    ? "no reads yet"
    : `${((stats.hits / reads) * 100).toFixed(1)}% of ${reads} reads`;
  document.getElementById("traffic").textContent =
    `${stats.requests} requests, ${formatBytes(stats.bytesSent)} sent, ${
      formatBytes(stats.bytesFromOrigin)
    } from origin, ${stats.evictions} evictions, ` +
    `${stats.connections.open} TCP and ${stats.protocols.http.connections} HTTP connections open`;
  document.getElementById("origin").textContent = describeOrigin(stats.origin);
  if (previous) {
    const hits = stats.hits - previous.hits;
    const all = reads - (previous.hits + previous.misses + previous.bypasses);
    ratios.push(all === 0 ? null : hits / all);
    if (ratios.length > HISTORY) ratios.shift();
  }
  previous = stats;
  drawRatioChart();
}

function drawRatioChart() {
  const svg = document.getElementById("ratio-chart");
  const points = [];
  ratios.forEach((ratio, i) => {
    if (ratio === null) return;
    // The chart fills as the history grows, then scrolls.
    const x = (i / Math.max(1, ratios.length - 1)) * 300;
    points.push(`${x.toFixed(1)},${(58 - ratio * 56).toFixed(1)}`);
  });
  svg.innerHTML = points.length === 0 ? "" : `<polyline points="${points.join(" ")}"/>`;
}

function drawEntries(listing) {
  document.getElementById("policy").textContent = `(${listing.policy}: next victim first)`;
  // A big cache holds thousands of entries: the next victims are what matters.
  const shown = listing.entries.slice(0, MAX_ENTRIES_SHOWN);
  const rows = shown.map((entry, i) =>
    row([
      cell(String(i + 1), "n"),
      cell(entry.path, "path"),
      cell(formatBytes(entry.size), "n"),
      cell(new Date(entry.admitted).toLocaleTimeString()),
    ])
  );
  const more = listing.entries.length - shown.length;
  if (more > 0) {
    rows.push(row([cell(""), cell(`… and ${more} more (see /-/cache)`), cell(""), cell("")]));
  }
  document.querySelector("#entries tbody").replaceChildren(...rows);
  document.getElementById("entries-empty").hidden = rows.length > 0;
}

function drawRecent(records) {
  const rows = records.slice().reverse().map((r) =>
    row([
      cell(new Date(r.time).toLocaleTimeString()),
      cell(r.protocol),
      cell(r.client),
      cell(`${r.command} ${r.path ?? ""}`, "path"),
      cell(String(r.status)),
      cell(r.cache ?? "", r.cache ?? ""),
      cell(formatBytes(r.bytes), "n"),
      cell(r.ms.toFixed(1), "n"),
    ])
  );
  document.querySelector("#recent tbody").replaceChildren(...rows);
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    const [stats, listing, recent] = await Promise.all([
      getJson("/-/stats"),
      getJson("/-/cache"),
      getJson("/-/recent"),
    ]);
    drawStats(stats);
    drawEntries(listing);
    drawRecent(recent);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("updated").textContent = `server unreachable (${error.message})`;
  } finally {
    setTimeout(refresh, 1000);
  }
}

refresh();
