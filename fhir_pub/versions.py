"""Convert the publication's R5 resources to FHIR R4B (4.3.0) and R4 (4.0.1), losing no fact.

:func:`convert` is a pure function, JSON in and JSON out. It follows HL7's cross-version rules
(https://hl7.org/fhir/versions.html, https://hl7.org/fhir/uv/xver/): an R5 element that has a true
equivalent in the target travels there, under its target name (``Medication.doseForm`` -> ``form``) or
in its target place (``MedicationKnowledge.definitional.doseForm`` -> ``MedicationKnowledge.doseForm``);
every other element travels as the standard cross-version extension
``http://hl7.org/fhir/5.0/StructureDefinition/extension-[R5 path]`` on its nearest parent that has a
place in the target. A complex value whose type the target's ``Extension.value[x]`` does not allow (a
backbone element; ``CodeableReference`` in R4) becomes nested extensions, one per child, each named by
the child's element name (``[x]`` dropped), as the cross-version packages define them.

Decisions, each for a reason:

- **ClinicalUseDefinition in R4** (which has no such resource) is a ``Basic`` with the same id: its
  ``code`` is ``http://hl7.org/fhir/fhir-types#ClinicalUseDefinition`` (the code system of FHIR's type
  names, saying what the Basic stands for), ``Basic.identifier`` carries the identifiers,
  ``Basic.subject`` (Reference to any resource) the first subject, and every other element, further
  subjects included, a cross-version extension ``extension-ClinicalUseDefinition.*``. R4's
  MedicinalProductIndication, -Contraindication, -Interaction and -UndesirableEffect were not used: R4
  has no such resource for a warning (27 of the publication's 62 clinical uses), their elements map
  only in part (the rest would be extensions anyway), and R4B withdrew them for ClinicalUseDefinition;
  one complete representation for every clinical use gives an R4 client one place to look. Every reference to
  ``ClinicalUseDefinition/[id]`` in an R4 resource is rewritten to ``Basic/[id]``, so the
  MedicationKnowledge's ``extension-MedicationKnowledge.clinicalUseIssue`` and each Provenance target
  still reach every clinical fact.
- **meta.profile is dropped**: it claims conformance to this publication's R5 profiles, which an R4 or
  R4B validator cannot resolve and which the converted form does not meet; a claim is not a fact of the
  leaflet, and carrying it in an extension would keep a claim that is false of the converted resource.
  ``meta.versionId``, ``meta.lastUpdated`` and the rest of ``meta`` stay.
- The narrative (``text``) stays as it is, links included (in R4 its ``ClinicalUseDefinition/[id]``
  links name the R5 type; the structured references are the ones rewritten).
- A value that the target requires and that R5 leaves without a target code (an R5-only
  ``Group.type``, ``Provenance.entity.role`` = ``instantiates``, a missing ``Provenance.recorded``)
  raises :class:`ConversionError` rather than inventing a value.
- A primitive's own extensions (``_status``) travel with it where it keeps a target element; with a
  value that moves into an extension they raise :class:`ConversionError` (an extension's value cannot
  carry them).
- ``Group.membership`` becomes R4's required ``Group.actual`` (``enumerated`` = true, ``definitional`` =
  false): R5 replaced the boolean by the code (https://hl7.org/fhir/R5/group.html).
- Where HL7's draft StructureMaps (hl7.fhir.uv.xver) map more loosely, a value of a different meaning or
  a type the target forbids there travels as an extension instead: docs/versions.md names each case.
- **SearchParameter and ValueSet** (the R4B and R4 packages' own, ``fhir_pub.package``) keep the
  elements R4 has with the same name and meaning; ``SearchParameter.processingMode`` is R4's
  ``xpathUsage``, which R5 renamed when it dropped XPath
  (https://hl7.org/fhir/R5/searchparameter-definitions.html#SearchParameter.processingMode). Neither
  rewrites an expression or a type code: which search parameters are valid at a version is the
  package's decision (the ones that version's CapabilityStatement serves).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fhir_pub.definitions import ElementInfo, elements

Target = Literal["4.3", "4.0"]
TARGETS: tuple[Target, ...] = ("4.3", "4.0")
TARGET_NAMES: dict[str, str] = {"4.3": "R4B", "4.0": "R4"}  # each target's release name

# https://hl7.org/fhir/versions.html#extensions: the URL of the extension for an R5 element.
XVER = "http://hl7.org/fhir/5.0/StructureDefinition/extension-"

FHIR_TYPES = "http://hl7.org/fhir/fhir-types"

Json = dict[str, Any]


class ConversionError(ValueError):
    """An R5 resource that cannot be expressed in the target version without inventing a fact."""


def xver_url(path: str) -> str:
    """The cross-version extension URL of an R5 element path (``Group.membership``)."""
    return f"{XVER}{path}"


# --- What the targets' Extension.value[x] accepts --------------------------------------------------


def _words(text: str) -> list[str]:
    """The names in a text that lists them separated by white space (tables read better so)."""
    return text.split()


_R4_VALUE_TYPES = frozenset(
    _words(
        """base64Binary boolean canonical code date dateTime decimal id instant integer markdown oid
    positiveInt string time unsignedInt uri url uuid Address Age Annotation Attachment CodeableConcept
    Coding ContactPoint Count Distance Duration HumanName Identifier Money Period Quantity Range Ratio
    Reference SampledData Signature Timing ContactDetail Contributor DataRequirement Expression
    ParameterDefinition RelatedArtifact TriggerDefinition UsageContext Dosage Meta"""
    )
)
_VALUE_TYPES: dict[Target, frozenset[str]] = {
    "4.0": _R4_VALUE_TYPES,
    "4.3": _R4_VALUE_TYPES - {"Meta"} | {"CodeableReference", "RatioRange"},
}

# --- Rules ---------------------------------------------------------------------------------------
# A rule says where one R5 element goes. Elements of resources and backbone elements are keyed by
# their R5 path (``Group.characteristic.code``), elements of datatypes by ``Type.element``
# (``Coding.code``). An element without a rule travels as a cross-version extension.


@dataclass(frozen=True)
class Same:
    """The element exists in the target with the same meaning, under ``name`` (default: its R5 name)."""

    name: str | None = None


@dataclass(frozen=True)
class Drop:
    """The element is left out on purpose (see the module docstring for each one)."""


@dataclass(frozen=True)
class Hoist:
    """A backbone element whose children live on its parent in the target (R5 grouped them)."""


@dataclass(frozen=True)
class Custom:
    """The element needs a function: ``(converter, path, info, value) -> {target name: value}``.

    The function returns the target elements to set; an empty result sends the value to the
    cross-version extension instead.
    """

    apply: Callable[[_Converter, str, ElementInfo, Any], Json]


Rule = Same | Drop | Hoist | Custom
Rules = Mapping[str, Rule]

KEEP = Same()


def _keep(*paths: str) -> dict[str, Rule]:
    return dict.fromkeys(paths, KEEP)


# The datatypes' elements that R4 and R4B have with the same name and meaning as R5.
_DATATYPES: dict[str, Rule] = {
    **_keep("CodeableConcept.coding", "CodeableConcept.text"),
    **_keep("Coding.system", "Coding.version", "Coding.code", "Coding.display", "Coding.userSelected"),
    **_keep("Reference.reference", "Reference.type", "Reference.identifier", "Reference.display"),
    **_keep(
        "Identifier.use",
        "Identifier.type",
        "Identifier.system",
        "Identifier.value",
        "Identifier.period",
        "Identifier.assigner",
    ),
    **_keep("Period.start", "Period.end", "Range.low", "Range.high", "Ratio.numerator", "Ratio.denominator"),
    **{
        f"{quantity}.{name}": KEEP
        for quantity in ("Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity")
        for name in ("value", "comparator", "unit", "system", "code")
    },
    **_keep("Money.value", "Money.currency"),
    **_keep("Annotation.authorReference", "Annotation.authorString", "Annotation.time", "Annotation.text"),
    **_keep(
        "Attachment.contentType",
        "Attachment.language",
        "Attachment.data",
        "Attachment.url",
        "Attachment.hash",
        "Attachment.title",
        "Attachment.creation",
    ),
    **_keep(
        "ContactPoint.system",
        "ContactPoint.value",
        "ContactPoint.use",
        "ContactPoint.rank",
        "ContactPoint.period",
    ),
    **_keep(
        "HumanName.use",
        "HumanName.text",
        "HumanName.family",
        "HumanName.given",
        "HumanName.prefix",
        "HumanName.suffix",
        "HumanName.period",
    ),
    **_keep(
        "Address.use",
        "Address.type",
        "Address.text",
        "Address.line",
        "Address.city",
        "Address.district",
        "Address.state",
        "Address.postalCode",
        "Address.country",
        "Address.period",
    ),
    **_keep(
        "Dosage.sequence",
        "Dosage.text",
        "Dosage.additionalInstruction",
        "Dosage.patientInstruction",
        "Dosage.timing",
        "Dosage.site",
        "Dosage.route",
        "Dosage.method",
        "Dosage.doseAndRate",
        "Dosage.maxDosePerAdministration",
        "Dosage.maxDosePerLifetime",
    ),
    **{
        f"DosageDoseAndRate.{name}": KEEP
        for name in ("type", "doseRange", "doseQuantity", "rateRatio", "rateRange", "rateQuantity")
    },
    **_keep("Timing.event", "Timing.repeat", "Timing.code"),
    **{
        f"TimingRepeat.{name}": KEEP
        for name in _words(
            "boundsDuration boundsRange boundsPeriod count countMax duration durationMax durationUnit "
            "frequency frequencyMax period periodMax periodUnit dayOfWeek timeOfDay when offset"
        )
    },
    **_keep(
        "Signature.type",
        "Signature.when",
        "Signature.who",
        "Signature.onBehalfOf",
        "Signature.targetFormat",
        "Signature.sigFormat",
        "Signature.data",
    ),
    "Dosage.asNeeded": Same("asNeededBoolean"),
    "Dosage.maxDosePerPeriod": Custom(lambda conv, path, info, value: _single(conv, "Ratio", value)),
    **_keep("Meta.versionId", "Meta.lastUpdated", "Meta.source", "Meta.security", "Meta.tag"),
    "Meta.profile": Drop(),
    **_keep("Narrative.status", "Narrative.div"),
}

_DATATYPE_NAMES = frozenset(key.split(".")[0] for key in _DATATYPES) | {"CodeableReference"}


def _single(conv: _Converter, type_name: str, value: list[Any]) -> Json:
    """An R5 list that R4 holds as one value: kept when it has one item, else an extension."""
    return {"maxDosePerPeriod": conv.complex_value(type_name, type_name, value[0])} if len(value) == 1 else {}


def _first_subject(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    """Basic.subject holds one reference; the others travel as extensions."""
    subjects = list(value)
    out: Json = {"subject": conv.complex_value("Reference", "Reference", subjects[0])}
    if len(subjects) > 1:
        out["extension"] = [conv.extension(path, info, subject) for subject in subjects[1:]]
    return out


def _codeable_reference_item(prefix: str) -> Callable[[_Converter, str, ElementInfo, Any], Json]:
    """R5's ``item`` (a CodeableReference) is R4's ``item[x]`` (CodeableConcept or Reference).

    With both a concept and a reference, the concept is ``item[x]`` and the reference travels as the
    element's cross-version extension.
    """

    def apply(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
        if set(value) - {"concept", "reference"}:
            return {}
        if "concept" in value:
            out: Json = {
                f"{prefix}CodeableConcept": conv.complex_value(
                    "CodeableConcept", "CodeableConcept", value["concept"]
                )
            }
            if "reference" in value:
                out["extension"] = [conv.extension(path, info, {"reference": value["reference"]})]
            return out
        return {f"{prefix}Reference": conv.complex_value("Reference", "Reference", value["reference"])}

    return apply


def _code_in(*codes: str, required: bool = False) -> Custom:
    """A code kept where the target's value set has it; otherwise an extension, or an error if required."""

    def apply(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
        if value in codes:
            return {info.name: value}
        if required:
            raise ConversionError(f"{path} {value!r} has no code in FHIR {conv.target} (it allows {codes})")
        return {}

    return Custom(apply)


def _membership(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    # https://hl7.org/fhir/R5/group.html: "membership" replaces R4's "actual".
    return {"actual": {"enumerated": True, "definitional": False}[value]}


def _references_to(*types: str) -> Custom:
    """A reference kept where the target allows its type; otherwise an extension."""

    def apply(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
        items = value if info.is_list else [value]
        kept = [item for item in items if _reference_type(item) in types]
        moved = [item for item in items if _reference_type(item) not in types]
        out: Json = {}
        if kept:
            converted = [conv.complex_value("Reference", "Reference", item) for item in kept]
            out[info.name] = converted if info.is_list else converted[0]
        if moved:
            out["extension"] = [conv.extension(path, info, item) for item in moved]
        return out

    return Custom(apply)


def _single_name(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    """R5's contact has names (0..*), R4's one (0..1)."""
    return {"name": conv.complex_value("HumanName", "HumanName", value[0])} if len(value) == 1 else {}


def _attachment_size(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    """R5's integer64 size (a JSON string) is R4's unsignedInt."""
    size = int(value)
    return {"size": size} if 0 <= size < 2**31 else {}


_REFERENCE_TYPE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def _reference_type(reference: Mapping[str, Any]) -> str | None:
    if isinstance(reference.get("type"), str):
        return str(reference["type"])
    match = _REFERENCE_TYPE.search(str(reference.get("reference", "")))
    return match.group(1) if match else None


def _rewrite_cud_reference(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    """In R4 a ClinicalUseDefinition is a Basic of the same id, and references follow it."""
    return {info.name: re.sub(r"(^|/)ClinicalUseDefinition/", r"\1Basic/", value)}


def _rewrite_cud_type(conv: _Converter, path: str, info: ElementInfo, value: Any) -> Json:
    return {info.name: "Basic" if value == "ClinicalUseDefinition" else value}


_ITEM = Custom(_codeable_reference_item("item"))

# Organization references of the R4/R4B authors, custodians and agents.
_R4_AGENTS = ("Practitioner", "PractitionerRole", "RelatedPerson", "Patient", "Device", "Organization")

# The elements of R5 resources that R4B and R4 share (R4B changed none of these resources from R4).
_COMMON: dict[str, Rule] = {
    **_DATATYPES,
    # MedicationKnowledge: R5 regrouped the definition under ``definitional`` and renamed synonym to
    # name; indicationGuideline, clinicalUseIssue, storageGuideline, author and intendedJurisdiction
    # have no R4 equivalent (administrationGuidelines.indication points at ObservationDefinition and its
    # patient characteristics are strings) and travel as extensions.
    **_keep(
        "MedicationKnowledge.code",
        "MedicationKnowledge.status",
        "MedicationKnowledge.associatedMedication",
        "MedicationKnowledge.productType",
        "MedicationKnowledge.preparationInstruction",
        "MedicationKnowledge.monograph",
        "MedicationKnowledge.monograph.type",
        "MedicationKnowledge.monograph.source",
        "MedicationKnowledge.monitoringProgram",
        "MedicationKnowledge.monitoringProgram.type",
        "MedicationKnowledge.monitoringProgram.name",
        "MedicationKnowledge.medicineClassification",
        "MedicationKnowledge.medicineClassification.type",
        "MedicationKnowledge.medicineClassification.classification",
        "MedicationKnowledge.relatedMedicationKnowledge",
        "MedicationKnowledge.relatedMedicationKnowledge.type",
        "MedicationKnowledge.relatedMedicationKnowledge.reference",
        "MedicationKnowledge.regulatory",
        "MedicationKnowledge.regulatory.substitution",
        "MedicationKnowledge.regulatory.substitution.type",
        "MedicationKnowledge.regulatory.substitution.allowed",
        "MedicationKnowledge.regulatory.maxDispense",
        "MedicationKnowledge.regulatory.maxDispense.quantity",
        "MedicationKnowledge.regulatory.maxDispense.period",
        "MedicationKnowledge.definitional.doseForm",
        "MedicationKnowledge.definitional.intendedRoute",
        "MedicationKnowledge.definitional.ingredient",
        "MedicationKnowledge.definitional.ingredient.isActive",
        "MedicationKnowledge.definitional.drugCharacteristic",
        "MedicationKnowledge.definitional.drugCharacteristic.type",
        "MedicationKnowledge.definitional.drugCharacteristic.valueCodeableConcept",
        "MedicationKnowledge.definitional.drugCharacteristic.valueString",
        "MedicationKnowledge.definitional.drugCharacteristic.valueQuantity",
        "MedicationKnowledge.definitional.drugCharacteristic.valueBase64Binary",
    ),
    "MedicationKnowledge.name": Same("synonym"),
    "MedicationKnowledge.definitional": Hoist(),
    "MedicationKnowledge.definitional.ingredient.item": _ITEM,
    "MedicationKnowledge.regulatory.regulatoryAuthority": _references_to("Organization"),
    # Medication: doseForm was R4's form; the ingredient's CodeableReference was item[x].
    **_keep(
        "Medication.identifier",
        "Medication.code",
        "Medication.status",
        "Medication.ingredient",
        "Medication.ingredient.isActive",
        "Medication.batch",
        "Medication.batch.lotNumber",
        "Medication.batch.expirationDate",
    ),
    "Medication.doseForm": Same("form"),
    "Medication.ingredient.item": _ITEM,
    "Medication.ingredient.strengthRatio": Same("strength"),
    # DocumentReference: R5 widened subject to any resource and docStatus to more codes; R4 keeps
    # those it can say. R5's relatesTo.code is a CodeableConcept where R4 requires one of four codes: the
    # relation travels whole as an extension.
    **_keep(
        "DocumentReference.identifier",
        "DocumentReference.status",
        "DocumentReference.type",
        "DocumentReference.category",
        "DocumentReference.date",
        "DocumentReference.description",
        "DocumentReference.securityLabel",
        "DocumentReference.content",
        "DocumentReference.content.attachment",
    ),
    "DocumentReference.docStatus": _code_in("preliminary", "final", "amended", "entered-in-error"),
    "DocumentReference.subject": _references_to("Patient", "Practitioner", "Group", "Device"),
    "DocumentReference.author": _references_to(*_R4_AGENTS),
    "DocumentReference.custodian": _references_to("Organization"),
    # Group: membership was actual; R5 added type codes R4 lacks (type is required there).
    **_keep(
        "Group.identifier",
        "Group.active",
        "Group.code",
        "Group.name",
        "Group.quantity",
        "Group.managingEntity",
        "Group.characteristic",
        "Group.characteristic.code",
        "Group.characteristic.valueCodeableConcept",
        "Group.characteristic.valueBoolean",
        "Group.characteristic.valueQuantity",
        "Group.characteristic.valueRange",
        "Group.characteristic.valueReference",
        "Group.characteristic.exclude",
        "Group.characteristic.period",
        "Group.member",
        "Group.member.entity",
        "Group.member.period",
        "Group.member.inactive",
    ),
    "Group.type": _code_in("person", "animal", "practitioner", "device", required=True),
    "Group.membership": Custom(_membership),
    # Organization: R5's contact is an ExtendedContactDetail; R4's contact has the same purpose,
    # telecom and address, and one name.
    **_keep(
        "Organization.identifier",
        "Organization.active",
        "Organization.type",
        "Organization.name",
        "Organization.alias",
        "Organization.partOf",
        "Organization.endpoint",
        "Organization.contact",
        "Organization.contact.purpose",
        "Organization.contact.telecom",
        "Organization.contact.address",
    ),
    "Organization.contact.name": Custom(_single_name),
    # Provenance: R5 made recorded optional and added entity.role "instantiates"; R4 requires both.
    **_keep(
        "Provenance.target",
        "Provenance.occurredPeriod",
        "Provenance.occurredDateTime",
        "Provenance.recorded",
        "Provenance.policy",
        "Provenance.location",
        "Provenance.activity",
        "Provenance.agent",
        "Provenance.agent.type",
        "Provenance.agent.role",
        "Provenance.entity",
        "Provenance.entity.what",
        "Provenance.entity.agent",
        "Provenance.entity.agent.type",
        "Provenance.entity.agent.role",
        "Provenance.signature",
    ),
    "Provenance.agent.who": _references_to(*_R4_AGENTS),
    "Provenance.agent.onBehalfOf": _references_to(*_R4_AGENTS),
    "Provenance.entity.agent.who": _references_to(*_R4_AGENTS),
    "Provenance.entity.agent.onBehalfOf": _references_to(*_R4_AGENTS),
    "Provenance.entity.role": _code_in("revision", "quotation", "source", "removal", required=True),
    "Attachment.size": Custom(_attachment_size),
    # Conformance resources of the R4B and R4 packages (module docstring).
    **_keep(
        *(
            f"SearchParameter.{name}"
            for name in _words(
                """url version name derivedFrom status experimental date publisher description purpose
                code base type expression multipleOr multipleAnd"""
            )
        )
    ),
    "SearchParameter.processingMode": Same("xpathUsage"),
    **_keep(
        *(
            f"ValueSet.{name}"
            for name in _words(
                """url identifier version name title status experimental date publisher description
                purpose copyright immutable compose compose.lockedDate compose.inactive
                compose.include compose.include.system compose.include.version compose.include.valueSet
                compose.include.concept compose.include.concept.code compose.include.concept.display
                compose.exclude compose.exclude.system compose.exclude.version compose.exclude.valueSet
                compose.exclude.concept compose.exclude.concept.code compose.exclude.concept.display"""
            )
        )
    ),
}

# R4B (4.3.0) added ClinicalUseDefinition and CodeableReference.
_R4B: dict[str, Rule] = {
    **_COMMON,
    **_keep("CodeableReference.concept", "CodeableReference.reference"),
    **_keep(
        *(
            f"ClinicalUseDefinition.{name}"
            for name in _words(
                """identifier type category status population
                contraindication contraindication.diseaseSymptomProcedure contraindication.diseaseStatus
                contraindication.comorbidity contraindication.indication contraindication.otherTherapy
                contraindication.otherTherapy.relationshipType contraindication.otherTherapy.treatment
                indication indication.diseaseSymptomProcedure indication.diseaseStatus indication.comorbidity
                indication.intendedEffect indication.durationRange indication.durationString
                indication.undesirableEffect indication.otherTherapy
                indication.otherTherapy.relationshipType indication.otherTherapy.treatment
                interaction interaction.interactant interaction.interactant.itemReference
                interaction.interactant.itemCodeableConcept interaction.type interaction.effect
                interaction.incidence interaction.management
                undesirableEffect undesirableEffect.symptomConditionEffect undesirableEffect.classification
                undesirableEffect.frequencyOfOccurrence warning warning.description warning.code"""
            )
        )
    ),
    "ClinicalUseDefinition.subject": _references_to(
        "MedicinalProductDefinition",
        "Medication",
        "ActivityDefinition",
        "PlanDefinition",
        "Device",
        "DeviceDefinition",
        "Substance",
    ),
}

# R4 (4.0.1): ClinicalUseDefinition is a Basic (module docstring); references follow it.
_R4: dict[str, Rule] = {
    **_COMMON,
    "ClinicalUseDefinition.identifier": KEEP,
    "ClinicalUseDefinition.subject": Custom(_first_subject),
    "Reference.reference": Custom(_rewrite_cud_reference),
    "Reference.type": Custom(_rewrite_cud_type),
}

RULES: dict[Target, Rules] = {"4.3": _R4B, "4.0": _R4}

# Elements R4 and R4B require that R5 makes optional: without them there is no target form.
_REQUIRED_IN_TARGET = {"Provenance": ("recorded",)}

# Elements every resource has in every version.
_RESOURCE_ELEMENTS_ORDER: tuple[str, ...] = ("id", "meta", "implicitRules", "language", "text")
_RESOURCE_ELEMENTS = frozenset(_RESOURCE_ELEMENTS_ORDER)


def _choice_name(info: ElementInfo) -> str:
    """The element name of a JSON key: ``valueRange`` is ``value`` (``value[x]``)."""
    return str(info.meta.get("one_of_many") or info.name)


def _upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


class _Converter:
    """One conversion to one target version."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.rules = RULES[target]

    def resource(self, resource: Mapping[str, Any]) -> Json:
        resource_type = str(resource["resourceType"])
        out: Json = {"resourceType": resource_type}
        if resource_type == "ClinicalUseDefinition" and self.target == "4.0":
            converted: Json = {}
            self.children(resource_type, resource_type, resource, converted)
            head: Json = {k: converted.pop(k) for k in _RESOURCE_ELEMENTS_ORDER if k in converted}
            code = {"coding": [{"system": FHIR_TYPES, "code": resource_type, "display": resource_type}]}
            return {"resourceType": "Basic", **head, "code": code, **converted}
        self.children(resource_type, resource_type, resource, out)
        for name in _REQUIRED_IN_TARGET.get(resource_type, ()):
            if name not in out:
                raise ConversionError(f"{resource_type}.{name}: required in FHIR {self.target}, absent")
        return out

    def children(self, path: str, type_name: str, value: Mapping[str, Any], out: Json) -> None:
        """Convert the elements of one value at R5 ``path`` (of R5 type ``type_name``) into ``out``."""
        known = elements(type_name)
        for key, item in value.items():
            if key in {"resourceType", "extension", "modifierExtension"} or key.startswith("_"):
                continue
            if key == "id":
                out[key] = item
                continue
            if key == "contained":
                out[key] = [self.resource(r) for r in item]
                continue
            info = known.get(key)
            if info is None:
                raise ConversionError(f"{path}.{key} is not an R5 element")
            self.element(path, type_name, info, item, value.get(f"_{key}"), out)
        for key in ("extension", "modifierExtension"):
            if key in value:
                out[key] = [self.extension_value(ext) for ext in value[key]] + out.get(key, [])

    def element(
        self, path: str, type_name: str, info: ElementInfo, item: Any, underscore: Any, out: Json
    ) -> None:
        """Put one R5 element (``item``, a value or list) where the rules say."""
        child_path = f"{path}.{info.name}"
        key = f"{type_name}.{info.name}" if type_name in _DATATYPE_NAMES else child_path
        rule = self.rules.get(key)
        if path == type_name and type_name not in _DATATYPE_NAMES and info.name in _RESOURCE_ELEMENTS:
            rule = rule or KEEP
        if isinstance(rule, Drop):
            return
        if isinstance(rule, Same):
            name = rule.name or info.name
            out[name] = self.value(child_path, info, item)
            if underscore is not None:
                out[f"_{name}"] = copy.deepcopy(underscore)
            return
        if isinstance(rule, Hoist):
            hoisted: Json = {}
            self.children(child_path, info.type_name, item, hoisted)
            if "modifierExtension" in hoisted or "id" in hoisted:
                raise ConversionError(f"{child_path}: its id and modifier extensions have no target place")
            left = hoisted.pop("extension", [])
            out.update(hoisted)
            if left:
                # Children of the hoisted element without a target place, and its own extensions:
                # one complex extension for the element, its children named relative to it.
                prefix = xver_url(child_path) + "."
                nested = [
                    dict(e, url=e["url"][len(prefix) :]) if str(e["url"]).startswith(prefix) else e
                    for e in left
                ]
                self.add_extensions(out, [{"url": xver_url(child_path), "extension": nested}])
            return
        if underscore is not None:
            raise ConversionError(f"{child_path}: a primitive's extensions cannot travel in an extension")
        if isinstance(rule, Custom):
            placed = rule.apply(self, child_path, info, item)
            if placed:
                self.add_extensions(out, placed.pop("extension", []))
                out.update(placed)
                return
        items = item if info.is_list else [item]
        self.add_extensions(out, [self.extension(child_path, info, one) for one in items])

    @staticmethod
    def add_extensions(out: Json, extensions: list[Json]) -> None:
        if extensions:
            out.setdefault("extension", []).extend(extensions)

    def value(self, path: str, info: ElementInfo, item: Any) -> Any:
        """Convert a kept element's value (a list or one value)."""
        if info.is_primitive:
            return list(item) if info.is_list else item
        if info.is_list:
            return [self.complex_value(path, info.type_name, one) for one in item]
        return self.complex_value(path, info.type_name, item)

    def complex_value(self, path: str, type_name: str, item: Mapping[str, Any]) -> Json:
        out: Json = {}
        self.children(path if type_name not in _DATATYPE_NAMES else type_name, type_name, item, out)
        return out

    def extension(self, path: str, info: ElementInfo, item: Any, url: str | None = None) -> Json:
        """The cross-version extension for one value of the R5 element at ``path``."""
        ext: Json = {"url": url or xver_url(path.rsplit(".", 1)[0] + "." + _choice_name(info))}
        type_name = info.type_name
        if info.is_primitive or type_name in _VALUE_TYPES[self.target]:
            if type_name not in _VALUE_TYPES[self.target]:
                raise ConversionError(f"{path}: FHIR {self.target} has no {type_name} extension value")
            ext[f"value{_upper_first(type_name)}"] = (
                item if info.is_primitive else self.complex_value(path, type_name, item)
            )
            return ext
        # A backbone element or a datatype the target lacks: one nested extension per child.
        nested_path = path if type_name not in _DATATYPE_NAMES else type_name
        known = elements(type_name)
        nested: list[Json] = []
        for key, child in item.items():
            if key == "id":
                ext["id"] = child
            elif key == "extension":
                nested.extend(self.extension_value(e) for e in child)
            elif key == "modifierExtension" or key.startswith("_"):
                raise ConversionError(f"{path}.{key} cannot travel in an extension")
            else:
                child_info = known[key]
                children = child if child_info.is_list else [child]
                name = _choice_name(child_info)
                nested.extend(
                    self.extension(f"{nested_path}.{key}", child_info, one, url=name) for one in children
                )
        ext["extension"] = nested
        return ext

    def extension_value(self, ext: Mapping[str, Any]) -> Json:
        """An extension already in the R5 resource, its value converted like any element."""
        known = elements("Extension")
        out: Json = {}
        for key, item in ext.items():
            if key == "extension":
                out[key] = [self.extension_value(e) for e in item]
            elif key.startswith("value") and known[key].type_name not in _VALUE_TYPES[self.target]:
                raise ConversionError(f"extension {ext.get('url')}: FHIR {self.target} has no {key}")
            elif key.startswith("value") and not known[key].is_primitive:
                out[key] = self.complex_value("Extension", known[key].type_name, item)
            else:
                out[key] = item
        return out


def convert(resource: Mapping[str, Any], target: Target) -> Json:
    """Return the R5 ``resource`` as FHIR ``target`` (``"4.3"`` = R4B, ``"4.0"`` = R4) JSON.

    Raises ConversionError for a value the target requires and cannot hold without invention.
    """
    if target not in RULES:
        raise ValueError(f"unknown FHIR version {target!r}: expected one of {TARGETS}")
    return _Converter(target).resource(resource)
