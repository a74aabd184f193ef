// sharp's default JPEG, WebP and AVIF of every file, for benchmarks/policy.py.
// usage: node sharp_formats.mjs SHARP_DIR FILES_JSON OUT_DIR
// Writes OUT_DIR/FORMAT/INDEX.FORMAT and prints {"sharp": version, "vips": version}.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [sharpDir, filesJson, outDir] = process.argv.slice(2);
const sharp = createRequire(join(sharpDir, "package.json"))("sharp");
const files = JSON.parse(readFileSync(filesJson, "utf8"));
for (const format of ["jpeg", "webp", "avif"]) {
  mkdirSync(join(outDir, format), { recursive: true });
  for (const [index, file] of files.entries()) {
    const out = await sharp(readFileSync(file))[format]().toBuffer();
    writeFileSync(join(outDir, format, `${index}.${format}`), out);
  }
}
process.stdout.write(JSON.stringify({ sharp: sharp.versions.sharp, vips: sharp.versions.vips }));
