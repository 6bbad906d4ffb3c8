"""Decodes OTLP/HTTP profiles request bodies with the OpenTelemetry project's own generated
classes (PyPI opentelemetry-proto) and prints what they hold as one JSON object per body.

Usage: decode_profiles.py BODY...

For each body: the resource's attributes, every mapping (file name, start, limit, file offset,
build id attributes), and per profile its sample type, period, the number of samples, the sum
of their values, the names of the functions their stacks reach, and the attribute keys and
values of the samples (``state`` values, how many ``goid`` values in all).
"""

import json
import sys

from opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2 import (
    ExportProfilesServiceRequest,
)


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


def decode(path):
    request = ExportProfilesServiceRequest()
    with open(path, "rb") as f:
        request.ParseFromString(f.read())
    d = request.dictionary
    strings = d.string_table
    if strings[0] != "":
        raise SystemExit(f"{path}: string_table[0] is {strings[0]!r}, not empty")

    def attribute(i):
        a = d.attribute_table[i]
        return strings[a.key_strindex], any_value(a.value)

    def function_names(stack_index):
        names = []
        for li in d.stack_table[stack_index].location_indices:
            for line in d.location_table[li].lines:
                names.append(strings[d.function_table[line.function_index].name_strindex])
        return names

    out = {"resource": {}, "mappings": [], "profiles": []}
    [rp] = request.resource_profiles
    for kv in rp.resource.attributes:
        out["resource"][kv.key] = any_value(kv.value)
    for m in list(d.mapping_table)[1:]:
        out["mappings"].append(
            {
                "file": strings[m.filename_strindex],
                "start": m.memory_start,
                "limit": m.memory_limit,
                "offset": m.file_offset,
                "attributes": dict(attribute(i) for i in m.attribute_indices),
            }
        )
    for sp in rp.scope_profiles:
        for p in sp.profiles:
            functions = set()
            states = set()
            goids = 0
            keys = set()
            for s in p.samples:
                functions.update(function_names(s.stack_index))
                for i in s.attribute_indices:
                    key, value = attribute(i)
                    keys.add(key)
                    if key == "state":
                        states.add(value)
                    elif key == "goid":
                        goids += len(value) if isinstance(value, list) else 1
            out["profiles"].append(
                {
                    "scope": sp.scope.name,
                    "sample_type": strings[p.sample_type.type_strindex]
                    + "/"
                    + strings[p.sample_type.unit_strindex],
                    "period": p.period,
                    "time_unix_nano": p.time_unix_nano,
                    "duration_nano": p.duration_nano,
                    "profile_id": p.profile_id.hex(),
                    "samples": len(p.samples),
                    "total": sum(sum(s.values) for s in p.samples),
                    "functions": sorted(functions),
                    "attribute_keys": sorted(keys),
                    "states": sorted(states),
                    "goids": goids,
                }
            )
    return out


for body in sys.argv[1:]:
    print(json.dumps(decode(body), sort_keys=True))
