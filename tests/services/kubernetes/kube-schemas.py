#!/usr/bin/env python3
"""Write JSON schemas for kubeconform from Kubernetes' own OpenAPI document, so
`kubeconform -strict` works offline (its default schemas are on the web).

Usage: kube-schemas.py --swagger SWAGGER.json --out DIR --version v1.34.4
                       [--crd CRDS.yaml]...

Writes DIR/<version>-standalone-strict/<kind>-<group>-<version>.json and
DIR/<version>-standalone/... (kubeconform's layout: pass `-schema-location DIR
-kubernetes-version 1.34.4`), one self-contained schema per kind:
  - every $ref is inlined (a recursive reference becomes "any");
  - "strict": objects with properties reject unknown ones;
  - optional fields may be null (as YAML lets them be);
  - IntOrString accepts a string or an integer, Quantity a string or a number.
With --crd (needs PyYAML), also one schema per served version of each
CustomResourceDefinition in the files, from its openAPIV3Schema.
The swagger.json ships in the k8s.io/kubernetes module (api/openapi-spec/).
"""

import argparse
import copy
import json
import os
import sys

SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "oneOf": [{"type": "string"}, {"type": "number"}]},
}
DROP = {"description", "x-kubernetes-group-version-kind", "example"}


def kind_suffix(api_version):
    """kubeconform's file-name suffix for an apiVersion ("apps/v1" -> "-apps-v1")."""
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0].lower()
    if len(parts) > 1:
        suffix += "-" + parts[1].lower()
    return suffix


def nullable(schema):
    t = schema.get("type")
    if isinstance(t, str):
        schema["type"] = [t, "null"]
    elif isinstance(t, list) and "null" not in t:
        schema["type"] = t + ["null"]
    elif "oneOf" in schema and not any(s.get("type") == "null" for s in schema["oneOf"]):
        schema["oneOf"] = schema["oneOf"] + [{"type": "null"}]
    return schema


def expand(node, defs, strict, stack=()):
    """A copy of `node` with every #/definitions/ reference inlined."""
    if isinstance(node, list):
        return [expand(n, defs, strict, stack) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in SPECIAL:
            return copy.deepcopy(SPECIAL[name])
        if name in stack:  # recursive (JSONSchemaProps): accept anything
            return {}
        return expand(defs[name], defs, strict, stack + (name,))
    out = {}
    for k, v in node.items():
        if k in DROP:
            continue
        if k == "properties":
            required = set(node.get("required", []))
            out[k] = {
                p: (expand(s, defs, strict, stack) if p in required
                    else nullable(expand(s, defs, strict, stack)))
                for p, s in v.items()
            }
        elif k in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            out[k] = expand(v, defs, strict, stack)
        else:
            out[k] = v
    if strict and "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def write(out_dir, version, strict, filename, schema):
    d = os.path.join(out_dir, f"{version}-standalone{'-strict' if strict else ''}")
    os.makedirs(d, exist_ok=True)
    schema = {"$schema": "http://json-schema.org/schema#", **schema}
    tmp = os.path.join(d, f".{filename}.tmp")
    with open(tmp, "w") as f:
        json.dump(schema, f, separators=(",", ":"), sort_keys=True)
    os.replace(tmp, os.path.join(d, filename))


def from_swagger(path, out_dir, version):
    with open(path) as f:
        defs = json.load(f)["definitions"]
    n = 0
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            filename = f"{gvk['kind'].lower()}{kind_suffix(api_version)}.json"
            for strict in (True, False):
                write(out_dir, version, strict, filename, expand(d, defs, strict, (name,)))
            n += 1
    return n


def from_crds(path, out_dir, version):
    import yaml  # PyYAML, only needed for CRDs

    n = 0
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for v in spec.get("versions", []):
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if not schema or not v.get("served", True):
                continue
            # the API server adds these to every custom resource; CRDs rarely list them
            schema = copy.deepcopy(schema)
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
            api_version = group + "/" + v["name"]
            filename = f"{kind.lower()}{kind_suffix(api_version)}.json"
            for strict in (True, False):
                write(out_dir, version, strict, filename, expand(schema, {}, strict))
            n += 1
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swagger")
    p.add_argument("--crd", action="extend", nargs="+", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--version", required=True, help="Kubernetes version, e.g. v1.34.4")
    a = p.parse_args()
    if not a.swagger and not a.crd:
        sys.exit("kube-schemas: give --swagger and/or --crd")
    version = a.version if a.version.startswith("v") else "v" + a.version
    if a.swagger:
        print(f"{from_swagger(a.swagger, a.out, version)} kinds from {a.swagger}")
    for crd in a.crd:
        print(f"{from_crds(crd, a.out, version)} custom resource versions from {crd}")


if __name__ == "__main__":
    main()
