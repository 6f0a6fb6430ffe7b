// Builds the web UI into the Python package (src/flowhawk/serve/ui/), so that a pip
// install serves it without Node.
//
// One esbuild bundle (JavaScript and the CSS it imports), minified, named by content hash
// under assets/ so browsers may cache it for good; index.html (never cached) names the
// current files. The output folder is replaced whole, and nothing in it depends on the
// time or the machine, so the same sources and lockfile give the same bytes. The licenses
// of every third-party package that ends up in the bundle are gathered from the
// metafile into THIRD-PARTY-LICENSES.txt beside it.

import { build } from "esbuild";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "..", "src", "flowhawk", "serve", "ui");

const result = await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  outdir: join(out, "assets"),
  legalComments: "none",
  metafile: true,
  write: false,
  logLevel: "warning",
  absWorkingDir: here,
});

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
const names = {};
for (const file of result.outputFiles) {
  writeFileSync(file.path, file.contents);
  const name = file.path.slice(out.length + 1);
  if (name.endsWith(".js")) names.js = name;
  if (name.endsWith(".css")) names.css = name;
}

const page = readFileSync(join(here, "src", "index.html"), "utf8")
  .replace("{{css}}", names.css)
  .replace("{{js}}", names.js);
writeFileSync(join(out, "index.html"), page);
writeFileSync(join(out, "THIRD-PARTY-LICENSES.txt"), licenses(result.metafile));
console.log(`web UI: ${names.js}, ${names.css} -> ${out}`);

/** The name, version and license text of each package the bundle holds code of. */
function licenses(metafile) {
  const packages = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) packages.add(m[1]);
  }
  const parts = [
    "Third-party software bundled in the flowhawk web UI (assets/*.js, assets/*.css).\n",
  ];
  for (const name of [...packages].sort()) {
    const dir = join(here, "node_modules", name);
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const file = readdirSync(dir)
      .filter((f) => /^(license|licence|copying)/i.test(f))
      .sort()[0];
    const text = file && existsSync(join(dir, file)) ? readFileSync(join(dir, file), "utf8") : "";
    parts.push(
      `${"=".repeat(78)}\n${meta.name} ${meta.version} (${meta.license})\n` +
        `${meta.homepage || ""}\n${"-".repeat(78)}\n${text.trim()}\n`,
    );
  }
  return parts.join("\n");
}
