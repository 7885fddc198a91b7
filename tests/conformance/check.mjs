// Strict conformance check of JSON bodies against ZITADEL's published protobuf definitions.
//
// Usage: node check.mjs <cases.json>
//
// <cases.json> is an array of {"op", "kind": "request"|"response", "schema", "json"}. Each
// "json" is decoded with @bufbuild/protobuf's fromJson into the message "schema" found in
// @zitadel/proto 1.3.1 with ignoreUnknownFields: false, so an unknown field, a wrong type or
// a bad enum name fails. Cases whose schema @zitadel/proto lacks (org v2 metadata) are written
// to <cases.json>.python.json for check_models.py. Prints one line per failure and a summary
// line "N passed, N failed"; exits 1 on any failure.

import { readFileSync, writeFileSync } from "node:fs";
import { createRegistry, fromJson } from "@bufbuild/protobuf";
import { file_zitadel_management } from "@zitadel/proto/zitadel/management_pb.js";
import { file_zitadel_admin } from "@zitadel/proto/zitadel/admin_pb.js";
import { file_zitadel_user_v2_user_service } from "@zitadel/proto/zitadel/user/v2/user_service_pb.js";
import { file_zitadel_org_v2_org_service } from "@zitadel/proto/zitadel/org/v2/org_service_pb.js";
import { file_zitadel_org_v2beta_org_service } from "@zitadel/proto/zitadel/org/v2beta/org_service_pb.js";
import { file_zitadel_metadata_v2_metadata } from "@zitadel/proto/zitadel/metadata/v2/metadata_pb.js";
import { file_zitadel_filter_v2_filter } from "@zitadel/proto/zitadel/filter/v2/filter_pb.js";

const registry = createRegistry(
  file_zitadel_management,
  file_zitadel_admin,
  file_zitadel_user_v2_user_service,
  file_zitadel_org_v2_org_service,
  file_zitadel_org_v2beta_org_service,
  file_zitadel_metadata_v2_metadata,
  file_zitadel_filter_v2_filter,
);

// Org v2 metadata messages are missing from @zitadel/proto 1.3.1. Their fields (org_service.proto
// at v4.x / main, cited in shared/zitadel-v2-and-events.md §1.2) reuse messages it does have:
// nested parts are decoded with those here, and the whole messages are checked against the
// official Python SDK models by check_models.py.
const COMPOSITES = {
  "zitadel.org.v2.ListOrganizationMetadataRequest": {
    organizationId: "string",
    pagination: "zitadel.filter.v2.PaginationRequest",
    filters: ["zitadel.metadata.v2.MetadataSearchFilter"],
  },
  "zitadel.org.v2.ListOrganizationMetadataResponse": {
    pagination: "zitadel.filter.v2.PaginationResponse",
    metadata: ["zitadel.metadata.v2.Metadata"],
  },
};

function checkComposite(spec, json) {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error("not a JSON object");
  }
  for (const [key, value] of Object.entries(json)) {
    const kind = spec[key];
    if (kind === undefined) throw new Error(`key "${key}" is unknown`);
    if (kind === "string") {
      if (typeof value !== "string") throw new Error(`${key}: not a string`);
    } else if (Array.isArray(kind)) {
      if (!Array.isArray(value)) throw new Error(`${key}: not a list`);
      for (const item of value) {
        fromJson(registry.getMessage(kind[0]), item, { ignoreUnknownFields: false, registry });
      }
    } else {
      fromJson(registry.getMessage(kind), value, { ignoreUnknownFields: false, registry });
    }
  }
}

const path = process.argv[2];
if (!path) {
  console.error("usage: node check.mjs <cases.json>");
  process.exit(2);
}
const cases = JSON.parse(readFileSync(path, "utf8"));
let passed = 0;
let failed = 0;
const deferred = [];
for (const c of cases) {
  const schema = registry.getMessage(c.schema);
  if (!schema) {
    deferred.push(c);
    const spec = COMPOSITES[c.schema];
    if (spec) {
      try {
        checkComposite(spec, c.json);
        passed++;
      } catch (e) {
        failed++;
        console.log(`FAIL ${c.op} ${c.kind} as ${c.schema} (nested parts): ${e.message}\n  ${JSON.stringify(c.json).slice(0, 400)}`);
      }
    }
    continue;
  }
  try {
    fromJson(schema, c.json, { ignoreUnknownFields: false, registry });
    passed++;
  } catch (e) {
    failed++;
    console.log(`FAIL ${c.op} ${c.kind} as ${c.schema}: ${e.message}\n  ${JSON.stringify(c.json).slice(0, 400)}`);
  }
}
writeFileSync(`${path}.python.json`, JSON.stringify(deferred));
console.log(`@zitadel/proto: ${deferred.length} case(s) deferred to the Python SDK models`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
