// The sharp peer: decode + JPEG re-encode of every file, all in flight, like the seed.
// usage: node sharp_bench.mjs SHARP_DIR FILES_JSON ROUNDS OUT_DIR
// SHARP_DIR holds node_modules/sharp (installed at run time by peers/sharp.py, outside
// the repository). FILES_JSON is a list of paths, in the order to submit them. Prints
// one JSON document: per variant the seconds of each round and the output sizes of the
// last round (the outputs are written to OUT_DIR/VARIANT/INDEX.jpg for SSIM).
import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

const [sharpDir, filesJson, roundsArg, outDir, qualityArg] = process.argv.slice(2);
const sharp = createRequire(join(sharpDir, "package.json"))("sharp");
const files = JSON.parse(readFileSync(filesJson, "utf8"));
const inputs = files.map((f) => readFileSync(f));
const rounds = Number(roundsArg);
const quality = Number(qualityArg ?? "50");
const variants = [
  { name: "sharp defaults (Huffman-optimised)", options: { quality } },
  { name: "sharp, optimiseCoding=false", options: { quality, optimiseCoding: false } },
];
const results = variants.map((v) => ({ name: v.name, times: [], outBytes: [] }));

const once = (options) => Promise.all(inputs.map((b) => sharp(b).jpeg(options).toBuffer()));

await once(variants[0].options); // warm-up, not timed
for (let r = 0; r < rounds; r++) {
  for (const [i, v] of variants.entries()) {
    const start = performance.now();
    const outs = await once(v.options);
    results[i].times.push((performance.now() - start) / 1000);
    if (r === rounds - 1) {
      const dir = join(outDir, String(i));
      mkdirSync(dir, { recursive: true });
      outs.forEach((o, k) => writeFileSync(join(dir, `${k}.jpg`), o));
      results[i].outBytes = outs.map((o) => o.length);
      results[i].outDir = dir;
    }
  }
}
const info = {
  sharp: sharp.versions.sharp,
  vips: sharp.versions.vips,
  concurrency: sharp.concurrency(),
  uvThreadpool: process.env.UV_THREADPOOL_SIZE ?? "4 (default)",
  maxRssMB: process.resourceUsage().maxRSS / 1024,
};
process.stdout.write(JSON.stringify({ info, variants: results }));
