// The CommonJS build is emitted as .js under dist/cjs, which the package's
// "type": "module" would have Node read as ESM: it becomes .cjs. Its types
// are the ES module's, as .d.cts, so that a CommonJS TypeScript project
// resolves types that describe what `require` gives it (no TS1479).
import { copyFileSync, readdirSync, renameSync } from "node:fs";
for (const f of readdirSync("dist/cjs")) {
  if (f.endsWith(".js")) renameSync(`dist/cjs/${f}`, `dist/cjs/${f.slice(0, -3)}.cjs`);
}
copyFileSync("dist/esm/index.d.ts", "dist/cjs/index.d.cts");
