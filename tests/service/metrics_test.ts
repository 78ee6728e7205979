import assert from "node:assert/strict";
import {
  DURATION_BUCKETS,
  formatMetrics,
  Histogram,
  type MetricsSnapshot,
} from "../../service/metrics.ts";

Deno.test("Histogram: cumulative buckets, count and sum", () => {
  const histogram = new Histogram();
  for (const value of [0.0001, 0.003, 0.003, 0.2, 60]) histogram.observe(value);
  assert.equal(histogram.count, 5);
  assert.ok(Math.abs(histogram.sum - 60.2061) < 1e-9);
  const at = (bound: number) => histogram.counts[DURATION_BUCKETS.indexOf(bound)];
  assert.equal(at(0.0005), 1);
  assert.equal(at(0.0025), 1);
  assert.equal(at(0.005), 3);
  assert.equal(at(0.25), 4);
  assert.equal(at(10), 4, "60 s is only in +Inf");
  for (let i = 1; i < histogram.counts.length; i++) {
    assert.ok(histogram.counts[i] >= histogram.counts[i - 1], "cumulative");
  }
});

Deno.test("formatMetrics: every sample line parses as Prometheus text, with HELP and TYPE", () => {
  const durations = { tcp: new Histogram(), http: new Histogram() };
  durations.http.observe(0.002);
  const snapshot: MetricsSnapshot = {
    requests: { tcp: { hit: 2, "404": 1 }, http: { miss: 1 } },
    durations,
    hits: 2,
    misses: 1,
    bypasses: 0,
    evictions: 4,
    bytesSent: 99,
    bytesFromOrigin: 50,
    sendTimeouts: 0,
    cacheUsed: 10,
    cacheCapacity: 100,
    cacheEntries: 1,
    memoryUsed: 10,
    open: { tcp: 1, http: 0 },
    uptimeSeconds: 1.5,
  };
  const text = formatMetrics(snapshot);
  assert.ok(text.endsWith("\n"));
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split("\n")) {
    const type = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line);
    if (type) typed.add(type[1]);
    if (line.startsWith("#")) continue;
    const match = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    assert.ok(match, `a sample line: ${line}`);
    const base = match[1].replace(/_(bucket|sum|count)$/, "");
    assert.ok(typed.has(match[1]) || typed.has(base), `TYPE before ${match[1]}`);
    samples.set(match[1] + (match[2] ?? ""), Number(match[3]));
  }
  assert.equal(samples.get('tcpcache_requests_total{protocol="tcp",outcome="404"}'), 1);
  assert.equal(samples.get('tcpcache_requests_total{protocol="http",outcome="miss"}'), 1);
  assert.equal(samples.get("tcpcache_evictions_total"), 4);
  assert.equal(samples.get("tcpcache_cache_capacity_bytes"), 100);
  assert.equal(samples.get('tcpcache_open_connections{protocol="tcp"}'), 1);
  assert.equal(
    samples.get('tcpcache_request_duration_seconds_bucket{protocol="http",le="0.001"}'),
    0,
  );
  assert.equal(
    samples.get('tcpcache_request_duration_seconds_bucket{protocol="http",le="0.0025"}'),
    1,
  );
  assert.equal(
    samples.get('tcpcache_request_duration_seconds_bucket{protocol="http",le="+Inf"}'),
    1,
  );
  assert.equal(samples.get('tcpcache_request_duration_seconds_count{protocol="tcp"}'), 0);
});
