/**
 * Line charts as standalone SVG: no library, no fonts to fetch, readable in
 * a browser and on GitHub.
 *
 * @module
 */

/** One line of a chart. */
export interface Series {
  /** Its name in the legend. */
  name: string;
  /** Its points, in x order. */
  points: { x: number; y: number }[];
  /** Drawn dashed (a reference line, such as an optimum). */
  dashed?: boolean;
}

/** One chart of a figure. */
export interface Panel {
  /** The chart's title. */
  title: string;
  /** The y axis label. */
  yLabel: string;
  /** The lines. */
  series: Series[];
}

/** Options of {@linkcode lineChartSvg}. */
export interface ChartOptions {
  /** The figure's title, above the panels. */
  title: string;
  /** The x axis label, shared by the panels. */
  xLabel: string;
  /** Formats an x value for its tick label. */
  formatX: (x: number) => string;
  /** Formats a y value for its tick label. */
  formatY: (y: number) => string;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];
const PANEL_WIDTH = 460;
const PANEL_HEIGHT = 320;
const MARGIN = { top: 70, right: 20, bottom: 60, left: 70 };

/**
 * Draws panels side by side, sharing x ticks (the x values of the first
 * series) and a legend.
 */
export function lineChartSvg(panels: Panel[], options: ChartOptions): string {
  const width = panels.length * (PANEL_WIDTH + MARGIN.left + MARGIN.right);
  const names = panels[0]?.series.map((s) => s.name) ?? [];
  const legendHeight = 24;
  const height = PANEL_HEIGHT + MARGIN.top + MARGIN.bottom + legendHeight;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16">${
      escape(options.title)
    }</text>`,
  ];
  panels.forEach((panel, i) => {
    parts.push(drawPanel(panel, i * (PANEL_WIDTH + MARGIN.left + MARGIN.right), options));
  });
  // The legend: one swatch per series, in a row under the panels.
  let x = MARGIN.left;
  const y = height - 14;
  names.forEach((name, i) => {
    const dashed = panels[0].series[i].dashed ? ` stroke-dasharray="6 4"` : "";
    parts.push(
      `<line x1="${x}" y1="${y - 4}" x2="${x + 24}" y2="${y - 4}" ` +
        `stroke="${seriesColor(panels[0].series[i], i)}" ` +
        `stroke-width="2.5"${dashed}/>`,
      `<text x="${x + 30}" y="${y}">${escape(name)}</text>`,
    );
    x += 40 + name.length * 8;
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function drawPanel(panel: Panel, left: number, options: ChartOptions): string {
  const xs = panel.series[0]?.points.map((p) => p.x) ?? [];
  const ys = panel.series.flatMap((s) => s.points.map((p) => p.y));
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  const { min: yMin, max: yMax, step } = niceTicks(Math.min(...ys), Math.max(...ys));
  const plotLeft = left + MARGIN.left;
  const plotTop = MARGIN.top;
  // Sizes that grow geometrically (doubling, say) are spaced evenly on a log scale.
  const logX = xMin > 0 && xs.length > 2 && xs.every((x, i) => i === 0 || x / xs[i - 1] >= 1.5);
  const scale = (x: number) => logX ? Math.log(x) : x;
  const sx = (x: number) =>
    plotLeft +
    (xMax === xMin
      ? PANEL_WIDTH / 2
      : (scale(x) - scale(xMin)) / (scale(xMax) - scale(xMin)) * PANEL_WIDTH);
  const sy = (y: number) => plotTop + PANEL_HEIGHT - (y - yMin) / (yMax - yMin) * PANEL_HEIGHT;
  const out: string[] = [
    `<text x="${plotLeft + PANEL_WIDTH / 2}" y="${plotTop - 16}" text-anchor="middle" ` +
    `font-size="14">${escape(panel.title)}</text>`,
    `<rect x="${plotLeft}" y="${plotTop}" width="${PANEL_WIDTH}" height="${PANEL_HEIGHT}" ` +
    `fill="none" stroke="#888"/>`,
  ];
  for (let k = 0; yMin + k * step <= yMax + step / 2; k++) {
    const y = yMin + k * step;
    out.push(
      `<line x1="${plotLeft}" y1="${sy(y)}" x2="${plotLeft + PANEL_WIDTH}" y2="${sy(y)}" ` +
        `stroke="#eee"/>`,
      `<text x="${plotLeft - 6}" y="${sy(y) + 4}" text-anchor="end">${
        escape(options.formatY(y))
      }</text>`,
    );
  }
  for (const x of xs) {
    out.push(
      `<line x1="${sx(x)}" y1="${plotTop + PANEL_HEIGHT}" x2="${sx(x)}" ` +
        `y2="${plotTop + PANEL_HEIGHT + 5}" stroke="#888"/>`,
      `<text x="${sx(x)}" y="${plotTop + PANEL_HEIGHT + 18}" text-anchor="middle">` +
        `${escape(options.formatX(x))}</text>`,
    );
  }
  out.push(
    `<text x="${plotLeft + PANEL_WIDTH / 2}" y="${plotTop + PANEL_HEIGHT + 42}" ` +
      `text-anchor="middle">${escape(options.xLabel)}</text>`,
    `<text transform="translate(${left + 18} ${plotTop + PANEL_HEIGHT / 2}) rotate(-90)" ` +
      `text-anchor="middle">${escape(panel.yLabel)}</text>`,
  );
  panel.series.forEach((series, i) => {
    const path = series.points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`);
    const dashed = series.dashed ? ` stroke-dasharray="6 4"` : "";
    out.push(
      `<polyline points="${path.join(" ")}" fill="none" stroke="${seriesColor(series, i)}" ` +
        `stroke-width="2"${dashed}/>`,
    );
    for (const p of series.points) {
      out.push(
        `<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="2.5" ` +
          `fill="${seriesColor(series, i)}"/>`,
      );
    }
  });
  return out.join("\n");
}

/** A y range padded to a round step (1, 2 or 5 times a power of ten), about five ticks. */
function niceTicks(min: number, max: number): { min: number; max: number; step: number } {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return { min: 0, max: 1, step: 0.2 };
  if (min === max) [min, max] = [Math.max(0, min - 0.05), max + 0.05];
  const raw = (max - min) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  return {
    min: Math.max(0, Math.floor(min / step) * step),
    max: Math.ceil(max / step) * step,
    step,
  };
}

function color(i: number): string {
  return PALETTE[i % PALETTE.length];
}

/** Reference lines (dashed) are black, so they read as a bound, not a rival. */
function seriesColor(series: Series, i: number): string {
  return series.dashed ? "#000" : color(i);
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
