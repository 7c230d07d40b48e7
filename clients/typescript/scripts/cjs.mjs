// The CommonJS build is emitted as .js under dist/cjs, which the package's
// "type": "module" would have Node read as ESM: it becomes .cjs.
import { readdirSync, renameSync } from "node:fs";
for (const f of readdirSync("dist/cjs")) {
  if (f.endsWith(".js")) renameSync(`dist/cjs/${f}`, `dist/cjs/${f.slice(0, -3)}.cjs`);
}
