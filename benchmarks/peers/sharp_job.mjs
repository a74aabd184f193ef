// The sharp peer doing imgcompress's job: one output per task, all tasks in flight.
// usage: node sharp_job.mjs SHARP_DIR JOB_JSON ROUNDS
// SHARP_DIR holds node_modules/sharp (installed at run time by peers/sharp.py, outside
// the repository). JOB_JSON: {"files": [paths], "tasks": [[fileIndex, "jpeg"|"webp"]],
// "recipe": "same"|"flatten", "quality": Q}. Recipe "same": each task's format at quality
// Q, sharp's default effort (JPEG Huffman-optimised, WebP effort 4); "flatten": every task
// flattened onto white, then JPEG at Q. The files are read once; one untimed warm-up
// round, then ROUNDS rounds. Prints one JSON document: the seconds and the process's CPU
// seconds (every thread: libuv's pool does the work) of each round, the output bytes of
// the last round, sharp's versions and concurrency.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

const [sharpDir, jobJson, roundsArg] = process.argv.slice(2);
const sharp = createRequire(join(sharpDir, "package.json"))("sharp");
const job = JSON.parse(readFileSync(jobJson, "utf8"));
const inputs = job.files.map((f) => readFileSync(f));
const quality = Number(job.quality);

function one([index, format]) {
  const image = sharp(inputs[index]);
  if (job.recipe === "flatten") {
    return image.flatten({ background: "#ffffff" }).jpeg({ quality }).toBuffer();
  }
  return format === "webp" ? image.webp({ quality }).toBuffer() : image.jpeg({ quality }).toBuffer();
}

const round = () => Promise.all(job.tasks.map(one));

await round(); // warm-up, not timed
const times = [];
const cpu = [];
let outBytes = 0;
for (let r = 0; r < Number(roundsArg); r++) {
  const used = process.cpuUsage();
  const start = performance.now();
  const outs = await round();
  times.push((performance.now() - start) / 1000);
  const spent = process.cpuUsage(used);
  cpu.push((spent.user + spent.system) / 1e6);
  outBytes = outs.reduce((sum, o) => sum + o.length, 0);
}
const info = {
  sharp: sharp.versions.sharp,
  vips: sharp.versions.vips,
  concurrency: sharp.concurrency(),
  uvThreadpool: process.env.UV_THREADPOOL_SIZE ?? "4 (default)",
};
process.stdout.write(JSON.stringify({ info, times, cpu, outBytes }));
