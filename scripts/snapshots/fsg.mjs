// Generate the snapshot of every StructureDefinition in a FHIR package folder with Outburn's
// fhir-snapshot-generator (an implementation independent of fhir-pub), and write them as one JSON object
// by canonical URL. Usage: node fsg.mjs CACHE PACKAGE#VERSION FOLDER OUT.json
import fs from 'node:fs';
import { FhirPackageExplorer } from 'fhir-package-explorer';
import { FhirSnapshotGenerator } from 'fhir-snapshot-generator';

const [cache, context, folder, out] = process.argv.slice(2);
const fpe = await FhirPackageExplorer.create({ context: [context], cachePath: cache, fhirVersion: '5.0.0', skipExamples: true });
const fsg = await FhirSnapshotGenerator.create({ fpe, fhirVersion: '5.0.0', cacheMode: 'none' });
const snapshots = {};
let failed = 0;
for (const name of fs.readdirSync(folder).filter((n) => n.startsWith('StructureDefinition-'))) {
  const sd = JSON.parse(fs.readFileSync(`${folder}/${name}`, 'utf8'));
  try {
    snapshots[sd.url] = (await fsg.getSnapshot(sd.url)).snapshot.element;
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${sd.url}: ${String(error).slice(0, 500)}`);
  }
}
fs.writeFileSync(out, JSON.stringify(snapshots));
process.exit(failed ? 1 : 0);
