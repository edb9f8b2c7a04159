// Builds the dashboard into ../ucloud/gateway/ui/dist, the gateway's package data:
// assets/ with content-hashed names, index.html naming them, and build.json holding
// the SHA-256 of the sources this build read (see sourcesHash), which a test
// recomputes to tell a stale bundle. Run `npm ci && npm run build` in web/.

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const out = join(here, "..", "ucloud", "gateway", "ui", "dist");

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

/** SHA-256 over (relative path, NUL, content, NUL) of every source, in path order. */
export function sourcesHash() {
  const sources = ["package.json", "package-lock.json", "build.mjs", "tsconfig.json", ...files(join(here, "src")).map((p) => relative(here, p))]
    .map((p) => p.split("\\").join("/"))
    .sort();
  const hash = createHash("sha256");
  for (const path of sources) {
    hash.update(path + "\0");
    hash.update(readFileSync(join(here, path)));
    hash.update("\0");
  }
  return hash.digest("hex");
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  splitting: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "linked",
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
});
const outputs = Object.entries(result.metafile.outputs);
const entry = (ext) => basename(outputs.find(([path, o]) => o.entryPoint && path.endsWith(ext))?.[0] ?? outputs.find(([path]) => path.endsWith(ext) && basename(path).startsWith("main-"))[0]);
const js = entry(".js");
const css = basename(outputs.find(([path]) => path.endsWith(".css"))[0]);
writeFileSync(join(out, "index.html"), `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ucloud</title>
<link rel="stylesheet" href="/ui/assets/${css}">
<script type="module" src="/ui/assets/${js}"></script>
</head>
<body><div id="app"></div></body>
</html>
`);
writeFileSync(join(out, "build.json"), JSON.stringify({ sources: sourcesHash() }, null, 1) + "\n");
console.log(`built ${js} and ${css} into ${relative(process.cwd(), out)}`);
