// Validate Kubernetes manifests against the Kubernetes, KEDA and prometheus-operator
// schemas (the kubernetes-models packages pinned in package.json, compiled from the
// upstream OpenAPI schemas and CRDs). Every document of every file given must be of a
// kind these packages know, and valid.
//
//   node deploy/validate/validate.mjs deploy/kubernetes/*.yaml
//
// Prints one line per document (`ok FILE#N apiVersion/kind name`) or why it is not valid,
// then `N passed, N failed`; exits 1 when any failed. Run by tests/test_deploy.py.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apiVersion -> module prefix. A core group ("v1") lives under kubernetes-models/v1.
const PACKAGES = {
  "keda.sh/": "@kubernetes-models/keda/keda.sh/",
  "monitoring.coreos.com/": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/",
};

async function modelFor(apiVersion, kind) {
  if (!/^[A-Za-z0-9./-]+$/.test(apiVersion) || !/^[A-Za-z0-9]+$/.test(kind)) {
    throw new Error(`not an apiVersion/kind: ${apiVersion}/${kind}`);
  }
  const prefix = Object.keys(PACKAGES).find((p) => apiVersion.startsWith(p));
  const path = prefix
    ? PACKAGES[prefix] + apiVersion.slice(prefix.length) + "/" + kind
    : "kubernetes-models/" + apiVersion + "/" + kind;
  try {
    const module = await import(path);
    return module[kind];
  } catch (err) {
    throw new Error(`no schema for ${apiVersion} ${kind} (${path})`);
  }
}

let passed = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const [i, doc] of docs.entries()) {
    const where = `${file}#${i + 1}`;
    if (doc.errors.length) {
      console.log(`FAIL ${where}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      failed++;
      continue;
    }
    const data = doc.toJS();
    if (data === null) continue; // an empty document (a file's leading comments)
    try {
      const Model = await modelFor(String(data.apiVersion), String(data.kind));
      new Model(data).validate();
      console.log(`ok ${where} ${data.apiVersion}/${data.kind} ${data.metadata?.name ?? ""}`);
      passed++;
    } catch (err) {
      console.log(`FAIL ${where} ${data.apiVersion}/${data.kind}: ${err.message}`);
      failed++;
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || !passed ? 1 : 0);
