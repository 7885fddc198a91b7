"""Strict conformance check with the official ZITADEL SDK's generated models.

Usage: python3 check_models.py <cases.python.json>

For schemas that @zitadel/proto 1.3.1 lacks (org v2 metadata), each JSON body is checked
against the PyPI ``zitadel-client==4.1.9`` model of that message: every key must be one of the
model's JSON properties (recursively through nested models and lists; unknown field = failure),
and pydantic must accept the values (``from_dict``). Prints one line per failure and a summary
line "N passed, N failed"; exits 1 on any failure.
"""

import importlib
import json
import re
import sys
import typing

# Proto message name -> SDK model (module, class).
MODELS = {
    "zitadel.org.v2.SetOrganizationMetadataRequest": "organization_service_set_organization_metadata_request",
    "zitadel.org.v2.SetOrganizationMetadataResponse": "organization_service_set_organization_metadata_response",
    "zitadel.org.v2.ListOrganizationMetadataRequest": "organization_service_list_organization_metadata_request",
    "zitadel.org.v2.ListOrganizationMetadataResponse": "organization_service_list_organization_metadata_response",
    "zitadel.org.v2.DeleteOrganizationMetadataRequest": "organization_service_delete_organization_metadata_request",
    "zitadel.org.v2.DeleteOrganizationMetadataResponse": "organization_service_delete_organization_metadata_response",
}


def model_class(module_name):
    module = importlib.import_module(f"zitadel_client.models.{module_name}")
    camel = "".join(part.capitalize() for part in module_name.split("_"))
    return getattr(module, camel)


def nested_model(annotation):
    """The pydantic model inside Optional[...] / List[...] annotations, if any."""
    for arg in typing.get_args(annotation) or ():
        found = nested_model(arg)
        if found is not None:
            return found
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    return None


# Known defect of the SDK generator: org v2's set entry `Metadata {key, value}` and the list item
# `zitadel.metadata.v2.Metadata {creationDate, changeDate, key, value}` collide into one model
# with only key/value. The list items are checked with @zitadel/proto's
# zitadel.metadata.v2.Metadata by check.mjs instead; here only the top level of that message.
SHALLOW = {("OrganizationServiceListOrganizationMetadataResponse", "metadata")}


def strict_keys(cls, value, where):
    """Unknown keys anywhere in ``value`` for model ``cls``."""
    errors = []
    if not isinstance(value, dict):
        return errors
    props = set(getattr(cls, "_" + cls.__name__ + "__properties", None) or cls.__properties)
    fields_by_alias = {(f.alias or name): f for name, f in cls.model_fields.items()}
    for key, item in value.items():
        if key not in props:
            errors.append(f"{where}: unknown field {key!r} (known: {sorted(props)})")
            continue
        field = fields_by_alias.get(key)
        sub = nested_model(field.annotation) if field is not None else None
        if (cls.__name__, key) in SHALLOW:
            continue
        if sub is None:
            continue
        items = item if isinstance(item, list) else [item]
        for i, element in enumerate(items):
            errors.extend(strict_keys(sub, element, f"{where}.{key}[{i}]"))
    return errors


def main():
    if len(sys.argv) != 2:
        print("usage: check_models.py <cases.python.json>", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    passed = failed = 0
    for case in cases:
        module_name = MODELS.get(case["schema"])
        label = f"{case['op']} {case['kind']} as {case['schema']}"
        if module_name is None:
            failed += 1
            print(f"FAIL {label}: no published definition known for this message")
            continue
        cls = model_class(module_name)
        errors = strict_keys(cls, case["json"], cls.__name__)
        try:
            if not any(c == cls.__name__ for c, _ in SHALLOW):
                cls.from_dict(case["json"])
        except Exception as e:  # pydantic.ValidationError and friends
            errors.append(re.sub(r"\s+", " ", str(e)))
        if errors:
            failed += 1
            print(f"FAIL {label}: {'; '.join(errors)}")
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
