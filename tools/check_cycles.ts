/**
 * Fails when the project's modules import each other in a cycle. Reads the
 * module graph from `deno info --json` (static, dynamic and type-only
 * imports alike) for every module of the project, and reports each strongly
 * connected group of more than one module, or a module that imports itself.
 *
 * Run it: `deno run --allow-read --allow-run tools/check_cycles.ts` (part of
 * `deno task check`).
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url);
/** Folders that hold no project source (the runtime cache, build output). */
const SKIP = new Set(["cache", "dist", "node_modules", ".git"]);

/** A module's project-local imports, by file URL. */
export type ImportGraph = Map<string, Set<string>>;

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** Every `.ts` file below `dir`, as file URLs. */
async function sourceFiles(dir: URL): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (SKIP.has(entry.name)) continue;
    const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
    if (entry.isDirectory) found.push(...await sourceFiles(url));
    else if (entry.isFile && entry.name.endsWith(".ts")) found.push(url.href);
  }
  return found.sort();
}

/** The import graph of `files` and whatever they import inside the project. */
async function importGraph(files: string[]): Promise<ImportGraph> {
  const graph: ImportGraph = new Map();
  for (const file of files) {
    if (graph.has(file)) continue; // already part of an earlier module's graph
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", file],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!output.success) throw new Error(`deno info failed for ${file}`);
    const info = JSON.parse(new TextDecoder().decode(output.stdout));
    for (const module of info.modules as InfoModule[]) {
      if (!module.specifier.startsWith(ROOT.href)) continue;
      const targets = new Set<string>();
      for (const dependency of module.dependencies ?? []) {
        for (const target of [dependency.code?.specifier, dependency.type?.specifier]) {
          if (target?.startsWith(ROOT.href)) targets.add(target);
        }
      }
      graph.set(module.specifier, targets);
    }
  }
  return graph;
}

/**
 * The cycles of `graph`: its strongly connected components of more than one
 * module, and modules that import themselves (Tarjan's algorithm).
 *
 * @example
 * ```ts
 * import { findCycles } from "./check_cycles.ts";
 * const graph = new Map([["a", new Set(["b"])], ["b", new Set(["a"])]]);
 * findCycles(graph); // [["a", "b"]]
 * ```
 */
export function findCycles(graph: ImportGraph): string[][] {
  const index = new Map<string, number>();
  const lowLink = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (node: string) => {
    index.set(node, index.size);
    lowLink.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        lowLink.set(node, Math.min(lowLink.get(node)!, lowLink.get(next)!));
      } else if (onStack.has(next)) {
        lowLink.set(node, Math.min(lowLink.get(node)!, index.get(next)!));
      }
    }
    if (lowLink.get(node) !== index.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || graph.get(node)?.has(node)) cycles.push(component.sort());
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return cycles;
}

if (import.meta.main) {
  const graph = await importGraph(await sourceFiles(ROOT));
  const cycles = findCycles(graph);
  const relative = (url: string) => url.slice(ROOT.href.length);
  for (const cycle of cycles) console.error(`import cycle: ${cycle.map(relative).join(" <-> ")}`);
  console.log(`${graph.size} modules, ${cycles.length} import cycle(s)`);
  Deno.exit(cycles.length === 0 ? 0 : 1);
}
