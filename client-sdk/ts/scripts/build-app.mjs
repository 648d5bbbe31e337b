// Bundles the web chat app (src/app, with the SDK) into one minified script, by
// default the gateway's `gateway/app/app.js`, which the `courier` binary serves at
// /app/. `node scripts/build-app.mjs <file>` writes elsewhere (the tests compare).

import { build } from "esbuild";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The options every build of the app uses. */
export function appBuild(outfile) {
  return {
    entryPoints: [resolve(root, "src/app/main.ts")],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    legalComments: "none",
    outfile,
    logLevel: "warning",
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await build(appBuild(resolve(process.argv[2] ?? resolve(root, "../../gateway/app/app.js"))));
}
