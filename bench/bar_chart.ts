/**
 * Grouped horizontal bar charts as standalone SVG, for the benchmark's
 * results: one panel per unit, one group of bars per workload, one bar per
 * server. (`plot.ts` draws line charts; workloads are categories, not an axis.)
 *
 * @module
 */

/** One workload's bars: a value per series name; a missing value draws no bar. */
export interface BarGroup {
  /** The workload, written left of its bars. */
  label: string;
  /** The value of each series measured. */
  values: Record<string, number | undefined>;
}

/** One panel: a unit and its workloads. */
export interface BarPanel {
  /** The panel's title, e.g. "requests per second". */
  title: string;
  /** The groups, drawn top to bottom. */
  groups: BarGroup[];
}

/** Options of {@linkcode barChartSvg}. */
export interface BarChartOptions {
  /** The figure's title. */
  title: string;
  /** The series in legend order, with their colours. */
  series: { name: string; color: string }[];
  /** Formats a value for the label at the end of its bar. */
  format: (value: number) => string;
}

const LABEL_WIDTH = 290;
const PLOT_WIDTH = 420;
const VALUE_WIDTH = 90;
const BAR_HEIGHT = 13;
const GROUP_GAP = 10;
const PANEL_HEADER = 30;

/**
 * Draws the panels one under the other, each scaled to its own largest value.
 *
 * @example
 * ```ts
 * const svg = barChartSvg(
 *   [{ title: "MB/s", groups: [{ label: "large", values: { a: 10, b: 12 } }] }],
 *   { title: "demo", series: [{ name: "a", color: "#1f77b4" }, { name: "b", color: "#999" }],
 *     format: (v) => v.toFixed(0) },
 * );
 * ```
 */
export function barChartSvg(panels: BarPanel[], options: BarChartOptions): string {
  const width = LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH;
  const parts: string[] = [];
  let y = 40;
  parts.push(
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16">${
      escape(options.title)
    }</text>`,
  );
  for (const panel of panels) {
    parts.push(drawPanel(panel, y, options));
    y += panelHeight(panel, options);
  }
  parts.push(legend(options, y + 10));
  const height = y + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    ...parts,
    "</svg>",
  ].join("\n") + "\n";
}

function groupHeight(options: BarChartOptions): number {
  return options.series.length * BAR_HEIGHT + GROUP_GAP;
}

function panelHeight(panel: BarPanel, options: BarChartOptions): number {
  return PANEL_HEADER + panel.groups.length * groupHeight(options) + 10;
}

function drawPanel(panel: BarPanel, top: number, options: BarChartOptions): string {
  const max = Math.max(
    1e-9,
    ...panel.groups.flatMap((g) => Object.values(g.values).filter((v) => v !== undefined)),
  );
  const out = [
    `<text x="${LABEL_WIDTH}" y="${top + 18}" font-size="14">${escape(panel.title)}</text>`,
  ];
  panel.groups.forEach((group, g) => {
    const groupTop = top + PANEL_HEADER + g * groupHeight(options);
    const middle = groupTop + options.series.length * BAR_HEIGHT / 2;
    out.push(
      `<text x="${LABEL_WIDTH - 8}" y="${middle + 4}" text-anchor="end">${
        escape(group.label)
      }</text>`,
    );
    options.series.forEach((series, s) => {
      const value = group.values[series.name];
      if (value === undefined || !Number.isFinite(value)) return;
      const barTop = groupTop + s * BAR_HEIGHT;
      const length = Math.max(1, value / max * PLOT_WIDTH);
      out.push(
        `<rect x="${LABEL_WIDTH}" y="${barTop}" width="${length.toFixed(1)}" ` +
          `height="${BAR_HEIGHT - 2}" fill="${series.color}"/>`,
        `<text x="${LABEL_WIDTH + length + 4}" y="${barTop + BAR_HEIGHT - 3}" font-size="10">${
          escape(options.format(value))
        }</text>`,
      );
    });
  });
  return out.join("\n");
}

function legend(options: BarChartOptions, y: number): string {
  let x = LABEL_WIDTH;
  return options.series.map((series) => {
    const item = `<rect x="${x}" y="${y - 10}" width="14" height="10" fill="${series.color}"/>` +
      `<text x="${x + 20}" y="${y}">${escape(series.name)}</text>`;
    x += 40 + series.name.length * 8;
    return item;
  }).join("\n");
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
