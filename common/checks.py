"""The vocabulary of checks a catalog may name, and their parameters.

Kept free of heavy imports: the catalog loader uses it to report unknown checks at start-up.
Field checks apply to the field they are declared on; record checks name their fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["field", "record"]


@dataclass(frozen=True)
class Check:
    """One named check from validation's vocabulary, with its parameters."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, key: str, default: str | None = None) -> str | None:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    scope: Scope
    required_params: tuple[str, ...] = ()
    optional_params: tuple[str, ...] = ()
    doc: str = ""
    field_types: tuple[str, ...] = ()  # a field check's field types (empty: any); record checks name theirs


TEXT = ("string",)


CODE_LISTS = (
    "sex",  # GB/T 2261.1
    "ethnicity",  # GB/T 3304
    "person_status",
    "entity_type",
    "entity_status",
    "id_type",  # 证件类型 / 持证主体代码类型
    "license_status",
)

# Named GB/T 36904 check-character variants a catalog may ask for explicitly. Only the standard's
# own algorithm is known so far; a vendor deviation is added here by name, never applied silently.
LICENSE_VARIANTS = ("strict",)

CHECKS: dict[str, CheckSpec] = {
    s.name: s
    for s in (
        CheckSpec("not_blank", "field", doc="present and not only white space", field_types=TEXT),
        CheckSpec("id_number", "field", doc="GB 11643 公民身份号码: form, real birth date, MOD 11-2 check character", field_types=TEXT),
        CheckSpec("uscc", "field", doc="GB 32100 统一社会信用代码: alphabet, GB 11714 check, check character", field_types=TEXT),
        CheckSpec("license_id", "field", optional_params=("variant",), doc="GB/T 36904 证照标识: prefix, parts, MOD 37,36", field_types=TEXT),
        CheckSpec("issuer_code", "field", doc="a valid USCC, or a 6-digit division code", field_types=TEXT),
        CheckSpec("code_list", "field", required_params=("list",), doc="value from a named code list", field_types=TEXT),
        CheckSpec("division", "field", doc="GB/T 2260 administrative division code", field_types=TEXT),
        CheckSpec("not_future", "field", doc="a date not after the day of the check", field_types=("date", "timestamp")),
        CheckSpec("not_negative", "field", doc="a number >= 0", field_types=("int", "decimal")),
        CheckSpec("birth_date_matches_id", "record", required_params=("id", "birth_date"), doc="birth_date equals the date inside the ID number"),
        CheckSpec("sex_matches_id", "record", required_params=("id", "sex"), doc="sex code 1/2 agrees with the ID's sex digit"),
        CheckSpec("id_by_type", "record", required_params=("type", "id"), doc="111 -> ID number rules, 001 -> USCC rules"),
        CheckSpec("valid_range", "record", required_params=("from", "until"), doc="until is NULL or not before from"),
    )
}


# Not a catalog's to name: every dataset has it, on its watermark column (rule ``updated_at.watermark``).
WATERMARK_CHECK = CheckSpec(
    "watermark", "field",
    doc="the source's change time is a readable time from 1900-01-01 and not after now + source.future_tolerance",
)


def check_problems(check: Check) -> list[str]:
    """What is wrong with one check declaration (empty when it is fine)."""
    spec = CHECKS.get(check.name)
    if spec is None:
        return [f"unknown check {check.name!r} (known: {', '.join(sorted(CHECKS))})"]
    given = {k for k, _ in check.params}
    problems = [f"check {check.name!r} needs parameter {p!r}" for p in spec.required_params if p not in given]
    allowed = set(spec.required_params) | set(spec.optional_params)
    problems += [f"check {check.name!r} has no parameter {p!r}" for p in sorted(given - allowed)]
    if check.name == "code_list" and check.param("list") not in CODE_LISTS and "list" in given:
        problems.append(f"unknown code list {check.param('list')!r} (known: {', '.join(CODE_LISTS)})")
    if check.name == "license_id" and "variant" in given and check.param("variant") not in LICENSE_VARIANTS:
        problems.append(f"unknown license_id variant {check.param('variant')!r} (known: {', '.join(LICENSE_VARIANTS)})")
    return problems
