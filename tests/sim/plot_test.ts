import assert from "node:assert/strict";
import { lineChartSvg } from "../../sim/plot.ts";

Deno.test("lineChartSvg: a panel per chart, a line per series, escaped text, dashed references", () => {
  const series = [
    { name: "fifo", points: [{ x: 1, y: 0.5 }, { x: 2, y: 0.4 }, { x: 4, y: 0.3 }] },
    { name: "a<b", dashed: true, points: [{ x: 1, y: 0.3 }, { x: 2, y: 0.2 }, { x: 4, y: 0.1 }] },
  ];
  const svg = lineChartSvg([
    { title: "first", yLabel: "y", series },
    { title: "second", yLabel: "y", series },
  ], {
    title: "T & U",
    xLabel: "size",
    formatX: (x) => `${x} MiB`,
    formatY: (y) => y.toFixed(1),
  });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.equal(svg.match(/<polyline /g)?.length, 4);
  assert.equal(svg.match(/stroke-dasharray/g)?.length, 3, "two dashed lines and the legend swatch");
  assert.match(svg, />T &amp; U</);
  assert.match(svg, />a&lt;b</);
  assert.ok(!svg.includes("NaN"), "every coordinate is a number");
  for (const tick of ["1 MiB", "2 MiB", "4 MiB", "0.1", "0.3", "0.5"]) {
    assert.ok(svg.includes(`>${tick}<`), tick);
  }
});
