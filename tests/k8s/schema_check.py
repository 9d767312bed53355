#!/usr/bin/python3
"""Validate Kubernetes objects against the official OpenAPI v3 schema.

    schema_check.py --schema api__v1_openapi.json [--kind io.k8s.api.core.v1.Pod] FILE...

Each FILE (or "-" for stdin) holds JSON or YAML, one document or many ("---"). Every
object is checked against the definition named by --kind, else the one whose
x-kubernetes-group-version-kind matches its apiVersion and kind. Errors are printed one
per line on stdout:

    FILE: doc N (Kind/name): .spec.containers[0].foo: unknown field

and the exit status is 1 if there was any (2 for a usage error). Objects whose kind the
schema does not define are listed as "skipped" on stderr and are not errors; empty YAML
documents (as Helm renders them) are ignored.

What is checked, as the API server's strict field validation would:
  - unknown fields (a property the definition does not have, where it lists properties
    and allows nothing else);
  - types: string, integer (int32/int64 ranges), number, boolean, object, array;
    int-or-string; resource quantities (the grammar of resource.Quantity); date-time;
    base64 for format "byte";
  - missing required fields;
  - enum values: the schema's own "enum" keyword where it has one; the published v3
    document for core/v1 carries none, so the closed sets of the core/v1 types that are
    marked +enum in k8s.io/api (restartPolicy, imagePullPolicy, toleration operators and
    effects, ...) are listed in ENUMS below and applied when the schema has no "enum".

A null value counts as an absent field (the API server decodes it so). Used by the
Kubernetes executor's tests (every Pod it builds) and by the Helm chart's tests.
Standard library only; YAML needs python3-yaml (imported only when a file is not JSON).
"""
import argparse
import base64
import json
import re
import sys

# Closed value sets of core/v1 string fields, by "<definition short name>.<property>".
# From the +enum types of k8s.io/api/core/v1/types.go; a newer schema's own "enum"
# keyword takes precedence.
ENUMS = {
    "Container.imagePullPolicy": ["Always", "Never", "IfNotPresent"],
    "Container.terminationMessagePolicy": ["File", "FallbackToLogsOnError"],
    "EphemeralContainer.imagePullPolicy": ["Always", "Never", "IfNotPresent"],
    "EphemeralContainer.terminationMessagePolicy": ["File", "FallbackToLogsOnError"],
    "PodSpec.restartPolicy": ["Always", "OnFailure", "Never"],
    "PodSpec.dnsPolicy": ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    "PodSpec.preemptionPolicy": ["Never", "PreemptLowerPriority"],
    "Toleration.operator": ["Exists", "Equal"],
    "Toleration.effect": ["NoSchedule", "PreferNoSchedule", "NoExecute"],
    "Taint.effect": ["NoSchedule", "PreferNoSchedule", "NoExecute"],
    "ContainerPort.protocol": ["TCP", "UDP", "SCTP"],
    "ServicePort.protocol": ["TCP", "UDP", "SCTP"],
    "EndpointPort.protocol": ["TCP", "UDP", "SCTP"],
    "NodeSelectorRequirement.operator": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
    "ServiceSpec.type": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    "ServiceSpec.sessionAffinity": ["ClientIP", "None"],
    "ServiceSpec.externalTrafficPolicy": ["Cluster", "Local"],
    "ServiceSpec.internalTrafficPolicy": ["Cluster", "Local"],
    "PersistentVolumeClaimSpec.volumeMode": ["Block", "Filesystem"],
    "PersistentVolumeSpec.volumeMode": ["Block", "Filesystem"],
    "PersistentVolumeSpec.persistentVolumeReclaimPolicy": ["Recycle", "Delete", "Retain"],
    "SeccompProfile.type": ["Unconfined", "RuntimeDefault", "Localhost"],
    "AppArmorProfile.type": ["Unconfined", "RuntimeDefault", "Localhost"],
    "PodSecurityContext.fsGroupChangePolicy": ["OnRootMismatch", "Always"],
    "HTTPGetAction.scheme": ["HTTP", "HTTPS"],
    "TopologySpreadConstraint.whenUnsatisfiable": ["DoNotSchedule", "ScheduleAnyway"],
    "TopologySpreadConstraint.nodeAffinityPolicy": ["Honor", "Ignore"],
    "TopologySpreadConstraint.nodeTaintsPolicy": ["Honor", "Ignore"],
    "PodOS.name": ["linux", "windows"],
    "HostPathVolumeSource.type": ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File",
                                  "Socket", "CharDevice", "BlockDevice"],
}
# Array items with a closed set: "<definition>.<property>[]".
ENUM_ITEMS = {
    "PersistentVolumeClaimSpec.accessModes[]": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                                "ReadWriteOncePod"],
    "PersistentVolumeSpec.accessModes[]": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                           "ReadWriteOncePod"],
}

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY_RE = re.compile(
    r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
DATE_TIME_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})$")
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class Validator:
    def __init__(self, doc):
        self.schemas = doc.get("components", {}).get("schemas", {})
        if not self.schemas:
            raise ValueError("no components.schemas: not an OpenAPI v3 document")
        self.by_gvk = {}
        for name, s in self.schemas.items():
            for gvk in s.get("x-kubernetes-group-version-kind", []):
                self.by_gvk[(gvk.get("group", ""), gvk.get("version"), gvk.get("kind"))] = name

    def definition_for(self, obj):
        api = obj.get("apiVersion")
        kind = obj.get("kind")
        if not isinstance(api, str) or not isinstance(kind, str):
            return None
        group, _, version = api.rpartition("/")
        return self.by_gvk.get((group, version, kind))

    @staticmethod
    def ref_name(ref):
        return ref.rsplit("/", 1)[-1]

    def resolve(self, schema):
        """Follows $ref and a single-element allOf; returns (schema, definition name)."""
        name = None
        while True:
            if "$ref" in schema:
                name = self.ref_name(schema["$ref"])
                schema = self.schemas.get(name, {})
            elif "allOf" in schema and len(schema["allOf"]) == 1:
                inner = schema["allOf"][0]
                if "$ref" in inner:
                    name = self.ref_name(inner["$ref"])
                schema = self.schemas.get(name, {}) if "$ref" in inner else inner
            else:
                return schema, name

    def check(self, value, schema, path, errors, owner=None, prop=None):
        schema, name = self.resolve(schema)
        if name == QUANTITY:
            self.check_quantity(value, path, errors)
            return
        if name == INT_OR_STRING or schema.get("format") == "int-or-string":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                errors.append((path, "expected an integer or a string, got %s" % type_name(value)))
            elif isinstance(value, int) and not INT_RANGES["int32"][0] <= value <= INT_RANGES["int32"][1]:
                errors.append((path, "integer %d is out of the int32 range" % value))
            return
        if "oneOf" in schema:
            for alt in schema["oneOf"]:
                sub = []
                self.check(value, alt, path, sub)
                if not sub:
                    return
            errors.append((path, "matches none of the allowed forms (got %s)" % type_name(value)))
            return
        t = schema.get("type")
        if t is None and "properties" in schema:
            t = "object"
        if t == "string":
            if not isinstance(value, str):
                errors.append((path, "expected a string, got %s" % type_name(value)))
                return
            fmt = schema.get("format")
            if fmt == "date-time" and not DATE_TIME_RE.match(value):
                errors.append((path, "'%s' is not an RFC 3339 date-time" % value))
            elif fmt == "byte":
                try:
                    base64.b64decode(value, validate=True)
                except ValueError:
                    errors.append((path, "'%.40s' is not valid base64" % value))
            self.check_enum(value, schema, path, errors, owner, prop)
        elif t == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    errors.append((path, "expected an integer, got %s" % type_name(value)))
                    return
            lo, hi = INT_RANGES.get(schema.get("format"), INT_RANGES["int64"])
            if not lo <= value <= hi:
                errors.append((path, "integer %d is out of the %s range"
                               % (value, schema.get("format", "int64"))))
        elif t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append((path, "expected a number, got %s" % type_name(value)))
        elif t == "boolean":
            if not isinstance(value, bool):
                errors.append((path, "expected a boolean, got %s" % type_name(value)))
        elif t == "array":
            if not isinstance(value, list):
                errors.append((path, "expected an array, got %s" % type_name(value)))
                return
            items = schema.get("items", {})
            item_enum = ENUM_ITEMS.get("%s.%s[]" % (owner, prop)) if owner else None
            for i, v in enumerate(value):
                if v is None:
                    errors.append(("%s[%d]" % (path, i), "null is not allowed in a list"))
                    continue
                self.check(v, items, "%s[%d]" % (path, i), errors)
                if item_enum is not None and isinstance(v, str) and v not in item_enum:
                    errors.append(("%s[%d]" % (path, i), "unsupported value '%s': want one of %s"
                                   % (v, ", ".join(item_enum))))
        elif t == "object":
            if not isinstance(value, dict):
                errors.append((path, "expected an object, got %s" % type_name(value)))
                return
            self.check_object(value, schema, name, path, errors)

    def check_enum(self, value, schema, path, errors, owner, prop):
        allowed = schema.get("enum")
        if allowed is None and owner:
            allowed = ENUMS.get("%s.%s" % (owner, prop))
        if allowed is not None and value not in allowed:
            errors.append((path, "unsupported value '%s': want one of %s"
                           % (value, ", ".join(repr(a) if a == "" else a for a in allowed))))

    def check_quantity(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            errors.append((path, "expected a quantity (string or number), got %s" % type_name(value)))
        elif isinstance(value, str) and not QUANTITY_RE.match(value):
            errors.append((path, "'%s' is not a quantity (like 500m, 2, 1.5Gi, 1e3)" % value))

    def check_object(self, value, schema, name, path, errors):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        short = name.rsplit(".", 1)[-1] if name else None
        for req in schema.get("required", []):
            if value.get(req) is None:
                errors.append(("%s.%s" % (path, req), "required field is missing"))
        for k, v in value.items():
            sub = "%s.%s" % (path, k) if re.match(r"^[A-Za-z_$][A-Za-z0-9_$]*$", k) \
                else "%s[%s]" % (path, json.dumps(k))
            if props is not None and k in props:
                if v is not None:
                    self.check(v, props[k], sub, errors, short, k)
            elif isinstance(extra, dict):
                if v is not None:
                    self.check(v, extra, sub, errors)
            elif extra is True or (props is None and extra is None):
                continue  # a free-form object
            else:
                errors.append((sub, "unknown field"))


def load_documents(text):
    """JSON if it parses as JSON (an array is a list of documents), else YAML (one or many
    documents)."""
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        pass
    import yaml  # python3-yaml; only needed for YAML input
    return list(yaml.safe_load_all(text))


def describe(obj):
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else "?"
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or "?"
    return "%s/%s" % (kind, name)


def main(argv):
    ap = argparse.ArgumentParser(description="Validate Kubernetes objects against an OpenAPI v3 schema.")
    ap.add_argument("--schema", required=True, help="the OpenAPI v3 document (api__v1_openapi.json)")
    ap.add_argument("--kind", help="validate every object against this definition "
                    "(e.g. io.k8s.api.core.v1.Pod) instead of by apiVersion/kind")
    ap.add_argument("files", nargs="+", metavar="FILE", help="JSON or YAML, '-' for stdin")
    args = ap.parse_args(argv)

    try:
        with open(args.schema, encoding="utf-8") as f:
            v = Validator(json.load(f))
    except (OSError, ValueError) as e:
        print("%s: cannot load the schema: %s" % (args.schema, e), file=sys.stderr)
        return 2
    if args.kind and args.kind not in v.schemas:
        print("--kind %s: the schema has no such definition" % args.kind, file=sys.stderr)
        return 2

    n_errors = 0
    for fname in args.files:
        try:
            if fname == "-":
                text = sys.stdin.read()
            else:
                with open(fname, encoding="utf-8") as f:
                    text = f.read()
            docs = load_documents(text)
        except Exception as e:  # unreadable or unparsable: an error of that file
            print("%s: cannot read: %s" % (fname, str(e).replace("\n", " ")))
            n_errors += 1
            continue
        for i, obj in enumerate(docs, 1):
            if obj is None:
                continue
            if not isinstance(obj, dict):
                print("%s: doc %d: expected an object, got %s" % (fname, i, type_name(obj)))
                n_errors += 1
                continue
            definition = args.kind or v.definition_for(obj)
            if definition is None:
                print("%s: doc %d (%s): skipped: apiVersion %s kind %s is not in the schema"
                      % (fname, i, describe(obj), obj.get("apiVersion"), obj.get("kind")),
                      file=sys.stderr)
                continue
            errors = []
            v.check(obj, {"$ref": "#/components/schemas/" + definition}, "", errors)
            for path, msg in errors:
                print("%s: doc %d (%s): %s: %s" % (fname, i, describe(obj), path or ".", msg))
            n_errors += len(errors)
    return 1 if n_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
