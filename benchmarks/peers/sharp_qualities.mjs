// sharp's default JPEG encoder at every quality, for benchmarks/encoders.py.
// usage: node sharp_qualities.mjs SHARP_DIR FILES_JSON OUT_DIR
// For each input (index K), writes OUT_DIR/K/Q.jpg for Q = 1..100, encoded from the decoded
// pixels with `jpeg({ quality: Q })` (sharp's defaults otherwise), and prints
// {"sharp", "vips", "cpu_ms": {"50": [per input], "80": [...]}}: the median process CPU
// time (user + system, every thread) of 3 encodes from raw pixels, one libvips thread.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [sharpDir, filesJson, outDir] = process.argv.slice(2);
const sharp = createRequire(join(sharpDir, "package.json"))("sharp");
sharp.concurrency(1);
sharp.cache(false);
const files = JSON.parse(readFileSync(filesJson, "utf8"));
const cpuMs = { 50: [], 80: [] };
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const [index, file] of files.entries()) {
  const { data, info } = await sharp(readFileSync(file)).raw().toBuffer({ resolveWithObject: true });
  const raw = { raw: { width: info.width, height: info.height, channels: info.channels } };
  mkdirSync(join(outDir, String(index)), { recursive: true });
  for (let quality = 1; quality <= 100; quality++) {
    const out = await sharp(data, raw).jpeg({ quality }).toBuffer();
    writeFileSync(join(outDir, String(index), `${quality}.jpg`), out);
  }
  for (const quality of [50, 80]) {
    const spent = [];
    for (let round = 0; round < 3; round++) {
      const before = process.cpuUsage();
      await sharp(data, raw).jpeg({ quality }).toBuffer();
      const used = process.cpuUsage(before);
      spent.push((used.user + used.system) / 1000);
    }
    cpuMs[quality].push(median(spent));
  }
}
process.stdout.write(
  JSON.stringify({ sharp: sharp.versions.sharp, vips: sharp.versions.vips, cpu_ms: cpuMs }),
);
