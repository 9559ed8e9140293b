// Validates Gateway API objects with the validators of the npm package @kubernetes-models/gateway-api (generated
// from the Gateway API's Go types: field types, enumerations, bounds and required fields; unknown fields are not
// refused here: the test checks those with the TypeScript compiler against the package's types).
// Usage: node gateway_api_check.mjs PREFIX < objects.json, where PREFIX is the folder `npm install --prefix` filled
// and objects.json a JSON array.  Prints one line per object ("ok KIND NAME" or "invalid KIND NAME: errors") and
// exits 1 when any object is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const obj of objects) {
  const kind = obj.kind;
  const where = `${kind} ${obj.metadata?.name}`;
  if (kind !== "HTTPRoute" || obj.apiVersion !== "gateway.networking.k8s.io/v1") {
    console.log(`invalid ${where}: not a gateway.networking.k8s.io/v1 HTTPRoute`);
    failed = true;
    continue;
  }
  const file = join(prefix, "node_modules/@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1", `${kind}.js`);
  const model = (await import(pathToFileURL(file).href))[kind];
  try {
    new model(obj).validate();
    console.log(`ok ${where}`);
  } catch (err) {
    console.log(`invalid ${where}: ${err.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
