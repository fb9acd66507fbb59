// Validate glTF/GLB files with the Khronos glTF validator and print the reports as one JSON list.
// Usage: node tests/gltf/validate.mjs FILE.glb [FILE.glb ...]
// Exit status: 0 when no file has an error, 1 when some file has errors, 2 on bad usage or I/O.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import validator from "gltf-validator";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tests/gltf/validate.mjs FILE.glb [FILE.glb ...]");
  process.exit(2);
}

const reports = [];
for (const file of files) {
  let data;
  try {
    data = await readFile(file);
  } catch (err) {
    console.error(`cannot read ${file}: ${err.message}`);
    process.exit(2);
  }
  // maxIssues 0 = report every issue, so that a test can list all warnings.
  const report = await validator.validateBytes(new Uint8Array(data), { uri: basename(file), maxIssues: 0 });
  report.path = file;
  reports.push(report);
}
console.log(JSON.stringify(reports, null, 2));
process.exit(reports.some((r) => r.issues.numErrors > 0) ? 1 : 0);
