"""Coverage of the leaflets: every fact they state, where the publication carries it, and who states it.

The table is written from a reading of the three source leaflets (MSK, MedlinePlus a617041, Pfizer USPI
section 17). Each row names a fact in our own words, the resource and FHIRPath that carry it, a fragment
that must appear there (a phrase or a code), and the leaflets that state it. The test checks the fragment
is there and that the resource's Provenance traces it to each of those leaflets.
"""

from __future__ import annotations

import copy
import re
from typing import Any, NamedTuple

import fhirpathpy
import pytest
from conftest import source_sets

from fhir_pub.provenance import WHOLE, sources_by_part
from fhir_pub.publication import Publication

M, L, P = "MSK", "MedlinePlus", "Pfizer"
DM, ATC = "DailyMed", "WHOCC ATC index"  # sources that are not leaflets
DOC = {
    M: "DocumentReference/msk-inotuzumab-ozogamicin",
    L: "DocumentReference/medlineplus-a617041",
    P: "DocumentReference/pfizer-besponsa-patient-counseling",
    DM: "DocumentReference/dailymed-besponsa",
    ATC: "DocumentReference/whocc-atc-index",
}
MK = "MedicationKnowledge/besponsa"
DOSE = "indicationGuideline.dosingGuideline.dosage.dosage"
IND = "ClinicalUseDefinition/indication-acute-lymphoblastic-leukemia"
W = "warning.description"
TIER = "undesirableEffect.classification.text"
EFFECT_CODE = "undesirableEffect.symptomConditionEffect.concept.coding.code"


def cud(name: str) -> str:
    return f"ClinicalUseDefinition/{name}"


class Fact(NamedTuple):
    """One fact stated by the leaflets, and where the publication carries it."""

    statement: str
    resource: str
    path: str
    fragment: str
    sources: tuple[str, ...]


# fmt: off
FACTS: list[Fact] = [
    # --- identity, class, product
    Fact("the brand name is Besponsa", MK, "name", "Besponsa", (M, L, P)),
    Fact("the generic name is inotuzumab ozogamicin", MK, "name", "inotuzumab ozogamicin", (M, L, P)),
    Fact("the drug is Besponsa, inotuzumab ozogamicin", MK, "code.text", "Besponsa (inotuzumab ozogamicin)", (M, L, P)),
    Fact("the product is Besponsa, inotuzumab ozogamicin", "Medication/besponsa-vial", "code.text", "Besponsa (inotuzumab ozogamicin)", (M, L, P)),
    Fact("it is marketed under that brand in the US", MK, "intendedJurisdiction.coding.code", "US", (M,)),
    Fact("it is marketed under that brand in Canada", MK, "definitional.drugCharacteristic.valueString", "Besponsa in Canada", (M,)),
    Fact("it is a monoclonal antibody", MK, "medicineClassification.classification.text", "Monoclonal antibody", (L,)),
    Fact("how the name is pronounced", MK, "definitional.drugCharacteristic.valueString", "in-oh-TOOZ-ue-mab", (L,)),
    Fact("its ATC code (WHOCC ATC index)", MK, "medicineClassification.classification.coding.code", "L01FB01", (ATC,)),
    Fact("the FDA is its regulator (DailyMed)", MK, "regulatory.regulatoryAuthority.reference", "Organization/fda", (DM,)),
    Fact("its NDC package code, on the drug (DailyMed)", MK, "code.coding.code", "0008-0100-01", (DM,)),
    Fact("the drug is sold as that package (DailyMed)", MK, "associatedMedication.reference", "Medication/besponsa-vial", (DM,)),
    Fact("the package is a single-dose vial (DailyMed)", "Medication/besponsa-vial", "code.text", "single-dose vial", (DM,)),
    Fact("its NDC package code (DailyMed)", "Medication/besponsa-vial", "code.coding.code", "0008-0100-01", (DM,)),
    Fact("it comes as a powder mixed with liquid", MK, "preparationInstruction", "powder that is mixed with liquid", (L,)),
    Fact("it is given into a vein", MK, "definitional.intendedRoute.text", "Intravenous", (M, L)),
    Fact("it is given as an infusion", MK, f"{DOSE}.text", "infusion into a vein", (M, L)),
    Fact("it is given into a vein (structured route)", MK, f"{DOSE}.route.text", "Intravenous", (M, L)),
    Fact("it is given as an infusion (structured method)", MK, f"{DOSE}.method.text", "Infusion", (M, L)),
    Fact("the drug's dose form is a powder to be mixed with liquid", MK, "definitional.doseForm.text", "Powder to be mixed with liquid", (L,)),
    Fact("the drug's active ingredient is inotuzumab ozogamicin", MK, "definitional.ingredient.item.concept.text", "inotuzumab ozogamicin", (M, L, P)),
    Fact("the product's active ingredient is inotuzumab ozogamicin", "Medication/besponsa-vial", "ingredient.item.concept.text", "inotuzumab ozogamicin", (M, L, P)),
    Fact("the product is a powder to be mixed with liquid", "Medication/besponsa-vial", "doseForm.text", "Powder to be mixed with liquid", (L,)),
    Fact("the infusion lasts 1 hour", MK, f"{DOSE}.text", "lasts 1 hour", (L,)),
    Fact("the infusion is 1 hour long (structured timing)", MK, f"{DOSE}.timing.repeat.durationUnit", "h", (L,)),
    Fact("a doctor or nurse gives it in a hospital or medical facility", MK, f"{DOSE}.text", "doctor or nurse at a hospital", (L,)),
    Fact("doses usually fall on days 1, 8 and 15", MK, f"{DOSE}.text", "days 1, 8 and 15", (L,)),
    Fact("a cycle lasts 3 to 4 weeks", MK, f"{DOSE}.text", "cycle of 3 to 4 weeks", (L,)),
    Fact("the cycle may be repeated every 4 weeks", MK, f"{DOSE}.text", "every 4 weeks", (L,)),
    Fact("treatment length depends on response and side effects", MK, f"{DOSE}.additionalInstruction.text", "How long treatment lasts", (L,)),
    Fact("the doctor may pause, stop, lower the dose or add medicines", MK, f"{DOSE}.additionalInstruction.text", "lower the dose", (L,)),
    Fact("other medicines are given before each dose to prevent reactions", MK, f"{DOSE}.text", "before each dose", (L,)),
    Fact("other medicines are given with it to avoid side effects", MK, f"{DOSE}.text", "help avoid side effects (MSK)", (M,)),
    Fact("use it as ordered and follow the instructions", MK, f"{DOSE}.additionalInstruction.text", "follow every instruction", (M,)),
    Fact("read all the information you are given", MK, f"{DOSE}.additionalInstruction.text", "read all the information", (M,)),
    Fact("after a missed dose, call the doctor", MK, f"{DOSE}.additionalInstruction.text", "dose is missed", (M,)),
    Fact("tell the doctor how you feel during and after treatment", MK, f"{DOSE}.additionalInstruction.text", "how you feel", (L,)),
    Fact("it is for patients aged 1 year and older", MK, "indicationGuideline.dosingGuideline.patientCharacteristic.valueRange.low.code", "a", (L,)),
    # --- monitoring
    Fact("blood work is checked as the doctor orders", MK, "monitoringProgram.name", "Blood work", (M,)),
    Fact("the doctor orders tests before, during and after treatment (monitoring)", MK, "monitoringProgram.name", "before, during and after treatment", (L,)),
    Fact("an ECG checks the heartbeat", MK, "monitoringProgram.name", "Electrocardiogram (ECG)", (M,)),
    Fact("a pregnancy test comes before the first dose", MK, "monitoringProgram.name", "Pregnancy test", (M, L)),
    Fact("keep all appointments with the doctor and the laboratory", MK, "monitoringProgram.name", "doctor and the laboratory", (L,)),
    # --- storage and disposal
    Fact("ask the care team how to store it at home", MK, "storageGuideline.note.text", "how to store it", (M,)),
    Fact("it is given in a hospital or medical facility", MK, "storageGuideline.note.text", "hospital or medical facility", (L,)),
    Fact("keep medicines out of reach of children and pets", MK, "storageGuideline.note.text", "children and pets", (M,)),
    Fact("keep medicines in a safe place", MK, "storageGuideline.note.text", "safe place", (M,)),
    Fact("throw away unused or expired medicines", MK, "storageGuideline.note.text", "unused or expired", (M,)),
    Fact("do not flush medicines or pour them down a drain", MK, "storageGuideline.note.text", "do not flush", (M,)),
    Fact("ask the pharmacist about disposal; take-back programs may exist", MK, "storageGuideline.note.text", "take-back program", (M,)),
    # --- the leaflets themselves
    Fact("the MSK leaflet is a monograph of the drug", MK, "monograph.source.reference", DOC[M], (M,)),
    Fact("the MedlinePlus page is a monograph of the drug", MK, "monograph.source.reference", DOC[L], (L,)),
    Fact("the Pfizer counseling text is a monograph of the drug", MK, "monograph.source.reference", DOC[P], (P,)),
    Fact("the MSK leaflet was last reviewed on 2024-03-26", DOC[M], "description", "2024-03-26", (M,)),
    Fact("the MSK page was last updated on 2022-12-12", DOC[M], "description", "page last updated 2022-12-12", (M,)),
    Fact("the MSK leaflet is built on UpToDate Lexidrug content", DOC[M], "author.reference", "Organization/uptodate", (M,)),
    Fact("MSK publishes the leaflet", DOC[M], "custodian.reference", "Organization/msk", (M,)),
    Fact("MSK's leaflet covers uses, administration, side effects, when to call", DOC[M], "description", "when to call a provider", (M,)),
    Fact("the MedlinePlus page was last revised on 2024-05-20", DOC[L], "description", "Last revised 2024-05-20", (L,)),
    Fact("the MedlinePlus page address", DOC[L], "content.attachment.url", "https://medlineplus.gov/druginfo/meds/a617041.html", (L,)),
    Fact("the MedlinePlus page id is a617041", DOC[L], "identifier.value", "a617041", (L,)),
    Fact("the NLM publishes MedlinePlus", DOC[L], "custodian.reference", "Organization/nlm", (L,)),
    Fact("the Pfizer page address", DOC[P], "content.attachment.url", "pfizermedicalinformation.com/en-us/besponsa/patient-counseling", (P,)),
    Fact("the Pfizer text is section 17 of the US prescribing information", DOC[P], "type.text", "section 17", (P,)),
    Fact("the Pfizer page is meant for US health care professionals", DOC[P], "description", "US health care professionals", (P,)),
    Fact("MSK's care team can be reached on 212-639-2000", "Organization/msk", "contact.telecom.value", "212-639-2000", (M,)),
    Fact("MSK's care team answers on weekdays 9 a.m. to 5 p.m.", "Organization/msk", "description", "weekdays between 9 a.m. and 5 p.m.", (M,)),
    Fact("after hours, leave a message or speak to another MSK provider", "Organization/msk", "description", "leave a message", (M,)),
    Fact("a doctor or nurse is always on call at MSK", "Organization/msk", "description", "on call at all times", (M,)),
    Fact("MSK keeps a library of patient education online", "Organization/msk", "contact.telecom.value", "https://www.mskcc.org/pe", (M,)),
    # --- indication
    Fact("it is used to treat a type of leukemia", IND, "indication.intendedEffect.concept.text", "Treatment of the leukemia", (M, L)),
    Fact("the leukemia is acute lymphoblastic leukemia (ALL)", IND, "indication.diseaseSymptomProcedure.concept.coding.code", "91857003", (L,)),
    Fact("it treats certain forms of ALL, not every ALL", IND, "indication.diseaseSymptomProcedure.concept.text", "Certain acute lymphoblastic leukemia", (L,)),
    Fact("ALL starts in white blood cells", IND, "indication.diseaseSymptomProcedure.concept.text", "starts in white blood cells", (L,)),
    Fact("it is for ALL that has not responded to earlier treatment", IND, "indication.diseaseStatus.concept.text", "not responded to previous cancer treatment", (L,)),
    Fact("the indication covers a defined population", IND, "population.reference", "Group/patients-1-year-and-older", (L,)),
    Fact("the population is adults and children 1 year and older", "Group/patients-1-year-and-older", "description", "adults, and children aged 1 year and older", (L,)),
    Fact("the population's age is at least 1 year", "Group/patients-1-year-and-older", "characteristic.valueRange.low.value", "1", (L,)),
    # --- liver toxicity and VOD
    Fact("it can harm the liver", cud("warning-hepatotoxicity"), W, "can harm the liver", (M, L, P)),
    Fact("liver harm can be severe, life-threatening or fatal", cud("warning-hepatotoxicity"), W, "severe, life-threatening or fatal", (M, L, P)),
    Fact("liver harm includes hepatic veno-occlusive disease", cud("warning-hepatotoxicity"), W, "hepatic veno-occlusive disease (VOD)", (L, P)),
    Fact("in VOD, blood vessels inside the liver are blocked", cud("warning-hepatotoxicity"), W, "blood vessels inside the liver become blocked", (L,)),
    Fact("VOD is also called sinusoidal obstruction syndrome", cud("warning-hepatotoxicity"), W, "sinusoidal obstruction syndrome", (P,)),
    Fact("liver test results may rise", cud("warning-hepatotoxicity"), W, "liver test results may rise", (P,)),
    Fact("liver risk is higher with a stem cell transplant after treatment", cud("warning-hepatotoxicity"), W, "stem cell transplant that follows treatment", (M,)),
    Fact("liver risk is higher with earlier liver problems", cud("warning-hepatotoxicity"), W, "already had liver problems", (M,)),
    Fact("liver risk is higher with more treatment", cud("warning-hepatotoxicity"), W, "the more treatment", (M,)),
    Fact("liver risk is higher in older patients", cud("warning-hepatotoxicity"), W, "older patients", (M,)),
    Fact("tell the doctor about past or present liver disease", cud("warning-hepatotoxicity"), W, "liver disease you have or have had", (M, L)),
    Fact("tell the doctor about any stem cell transplant", cud("warning-hepatotoxicity"), W, "any stem cell transplant", (M, L)),
    Fact("with prior VOD or serious liver disease, weigh benefit and risk", cud("warning-hepatotoxicity"), W, "weigh the benefits and risks", (P,)),
    Fact("liver sign: dark urine", cud("warning-hepatotoxicity"), W, "dark urine", (M, L)),
    Fact("liver sign: tiredness, extreme tiredness", cud("warning-hepatotoxicity"), W, "extreme tiredness", (M, L)),
    Fact("liver sign: decreased appetite", cud("warning-hepatotoxicity"), W, "decreased appetite", (M,)),
    Fact("liver sign: upset stomach or nausea", cud("warning-hepatotoxicity"), W, "upset stomach or nausea", (M, L)),
    Fact("liver sign: stomach pain", cud("warning-hepatotoxicity"), W, "stomach pain", (M,)),
    Fact("liver sign: vomiting", cud("warning-hepatotoxicity"), W, "vomiting", (M, L)),
    Fact("liver sign: light-colored stools", cud("warning-hepatotoxicity"), W, "light-colored stools", (M,)),
    Fact("liver sign: yellow skin or eyes", cud("warning-hepatotoxicity"), W, "yellow skin or eyes", (M, L)),
    Fact("liver sign: rapid weight gain", cud("warning-hepatotoxicity"), W, "rapid weight gain", (L, P)),
    Fact("liver sign: pain or swelling in the upper right belly", cud("warning-hepatotoxicity"), W, "upper right belly", (L,)),
    Fact("liver sign: a swollen belly that may hurt", cud("warning-hepatotoxicity"), W, "swollen belly that may be painful", (P,)),
    Fact("liver sign: raised bilirubin", cud("warning-hepatotoxicity"), W, "bilirubin", (P,)),
    Fact("with liver signs, call the doctor right away", cud("warning-hepatotoxicity"), W, "Call your doctor right away", (M, L)),
    Fact("with liver signs, get medical advice at once", cud("warning-hepatotoxicity"), W, "get medical advice at once", (P,)),
    Fact("VOD is an undesirable effect", cud("effect-hepatic-veno-occlusive-disease"), EFFECT_CODE, "65617004", (L, P)),
    # --- death after transplant
    Fact("after a stem cell transplant, the risk of death not due to relapse is higher", cud("warning-post-transplant-mortality"), W, "causes other than the leukemia coming back", (L, P)),
    Fact("in an HSCT, blood cells are removed and later returned", cud("warning-post-transplant-mortality"), W, "taken out of the body and later put back", (L,)),
    Fact("one study found more deaths after transplant than with certain other medicines", cud("warning-post-transplant-mortality"), W, "one study", (M,)),
    Fact("infection and VOD were the most common causes of those deaths", cud("warning-post-transplant-mortality"), W, "Infection and VOD", (P,)),
    Fact("after a transplant, report fever, chills, cough, sore throat", cud("warning-post-transplant-mortality"), W, "fever, chills, cough, sore throat", (L,)),
    Fact("after a transplant, report rapid weight gain", cud("warning-post-transplant-mortality"), W, "rapid weight gain", (L,)),
    Fact("after a transplant, report upper right belly pain or swelling", cud("warning-post-transplant-mortality"), W, "upper right belly", (L,)),
    Fact("report signs of infection", cud("warning-post-transplant-mortality"), W, "Report any signs of infection", (P,)),
    Fact("talk with the doctor about questions or concerns", cud("warning-post-transplant-mortality"), W, "questions or concerns", (M,)),
    # --- low blood counts
    Fact("the bone marrow may make fewer blood cells", cud("warning-myelosuppression"), W, "bone marrow", (M,)),
    Fact("low blood counts can be life-threatening", cud("warning-myelosuppression"), W, "can be life-threatening", (P,)),
    Fact("low counts can lead to infections", cud("warning-myelosuppression"), W, "infections", (M, P)),
    Fact("those infections may be life-threatening or fatal", cud("warning-myelosuppression"), W, "life-threatening or fatal", (P,)),
    Fact("low counts can lead to bleeding or hemorrhage", cud("warning-myelosuppression"), W, "bleeding or hemorrhage", (M, P)),
    Fact("low counts can lead to anemia", cud("warning-myelosuppression"), W, "anemia", (M,)),
    Fact("report signs of the effects of low blood counts", cud("warning-myelosuppression"), W, "other effects of low blood counts", (P,)),
    # --- bleeding
    Fact("you may bleed more easily", cud("warning-bleeding"), W, "bleed more easily", (M,)),
    Fact("avoid injuries", cud("warning-bleeding"), W, "avoid injuries", (M,)),
    Fact("use a soft toothbrush and an electric razor", cud("warning-bleeding"), W, "soft toothbrush and an electric razor", (M,)),
    Fact("bleeding has rarely been fatal", cud("warning-bleeding"), W, "Rarely, bleeding problems have been fatal", (M,)),
    Fact("bleeding sign: vomiting or coughing up blood, coffee-ground vomit", cud("warning-bleeding"), W, "coffee grounds", (M,)),
    Fact("bleeding sign: blood in the urine", cud("warning-bleeding"), W, "blood in the urine", (M,)),
    Fact("bleeding sign: black, red or tarry stools", cud("warning-bleeding"), W, "tarry stools", (M, L)),
    Fact("bleeding sign: red blood in the stools", cud("warning-bleeding"), W, "red blood in the stools", (L,)),
    Fact("bleeding sign: bleeding gums", cud("warning-bleeding"), W, "bleeding gums", (M,)),
    Fact("bleeding sign: abnormal vaginal bleeding", cud("warning-bleeding"), W, "abnormal vaginal bleeding", (M,)),
    Fact("bleeding sign: unexplained or growing bruises, unusual bruising", cud("warning-bleeding"), W, "bruising", (M, L)),
    Fact("bleeding sign: bleeding that will not stop", cud("warning-bleeding"), W, "will not stop", (M,)),
    # --- infection
    Fact("infections are more likely and some were severe or fatal", cud("warning-infection"), W, "severe or fatal", (M, P)),
    Fact("wash your hands often", cud("warning-infection"), W, "Wash your hands often", (M,)),
    Fact("keep away from people with infections, colds or flu", cud("warning-infection"), W, "colds or flu", (M,)),
    Fact("infection sign: fever or chills", cud("warning-infection"), W, "fever or chills", (M, L)),
    Fact("infection sign: very bad sore throat", cud("warning-infection"), W, "very bad sore throat", (M,)),
    Fact("infection sign: ear or sinus pain", cud("warning-infection"), W, "ear or sinus pain", (M,)),
    Fact("infection sign: cough", cud("warning-infection"), W, "cough", (M, L)),
    Fact("infection sign: more sputum or a change in its color", cud("warning-infection"), W, "sputum that changes color", (M,)),
    Fact("infection sign: pain when passing urine", cud("warning-infection"), W, "pain when passing urine", (M,)),
    Fact("infection sign: mouth sores", cud("warning-infection"), W, "mouth sores", (M,)),
    Fact("infection sign: a wound that does not heal", cud("warning-infection"), W, "wound that does not heal", (M,)),
    # --- allergy
    Fact("allergic reaction sign: rash, hives or itching", cud("warning-allergic-reaction"), W, "rash, hives or itching", (M,)),
    Fact("allergic reaction sign: red, swollen, blistered or peeling skin", cud("warning-allergic-reaction"), W, "blistered or peeling", (M,)),
    Fact("allergic reaction sign: wheezing, chest or throat tightness", cud("warning-allergic-reaction"), W, "chest or throat that feels tight", (M,)),
    Fact("allergic reaction sign: trouble breathing, swallowing or talking; hoarseness", cud("warning-allergic-reaction"), W, "unusual hoarseness", (M,)),
    Fact("allergic reaction sign: swelling of mouth, face, lips, tongue or throat", cud("warning-allergic-reaction"), W, "lips, tongue or throat", (M,)),
    Fact("tell the doctor about an allergy to this medicine, its ingredients or other medicines", cud("warning-allergy-history"), W, "allergic to inotuzumab ozogamicin", (M, L)),
    Fact("tell the pharmacist about allergies too", cud("warning-allergy-history"), W, "your pharmacist (MedlinePlus)", (L,)),
    Fact("tell the doctor about allergies to foods or other substances", cud("warning-allergy-history"), W, "foods or other substances", (M,)),
    Fact("describe the allergy and the signs you had", cud("warning-allergy-history"), W, "signs you had", (M,)),
    Fact("the pharmacist can list the ingredients", cud("warning-allergy-history"), W, "list of the ingredients", (L,)),
    # --- infusion reactions
    Fact("infusion reactions happened and could be severe or life-threatening", cud("warning-infusion-related-reaction"), W, "severe or life-threatening", (M,)),
    Fact("medicines are given before each dose to prevent a reaction", cud("warning-infusion-related-reaction"), W, "before each dose", (L,)),
    Fact("infusion reaction signs: fever, chills, rash, trouble breathing", cud("warning-infusion-related-reaction"), W, "fever, chills, rash or trouble breathing", (M, L, P)),
    Fact("infusion reaction sign: shortness of breath", cud("warning-infusion-related-reaction"), W, "shortness of breath", (L,)),
    Fact("MSK: watch during the infusion and within 1 hour after", cud("warning-infusion-related-reaction"), W, "within 1 hour after it ends", (M,)),
    Fact("MedlinePlus: watch during and for at least one hour after", cud("warning-infusion-related-reaction"), W, "at least one hour after it ends", (L,)),
    Fact("Pfizer: report symptoms during the infusion", cud("warning-infusion-related-reaction"), W, "Pfizer: during the infusion", (P,)),
    # --- QT
    Fact("it can prolong the QT interval", cud("warning-qt-prolongation"), "warning.code.coding.code", "111975006", (M, P)),
    Fact("prolonged QT is a rare heart problem that can cause fainting or sudden death", cud("warning-qt-prolongation"), W, "sudden death", (L,)),
    Fact("tell the doctor about a personal or family history of prolonged QT", cud("warning-qt-prolongation"), W, "anyone in your family", (L,)),
    Fact("tell the doctor about low potassium or magnesium", cud("warning-qt-prolongation"), W, "potassium or magnesium", (L,)),
    Fact("tell the doctor about heart problems or kidney disease", cud("warning-qt-prolongation"), W, "heart problems or kidney disease", (L,)),
    Fact("tell the doctor if you have an infection", cud("warning-infection"), W, "tell your doctor if you have an infection", (L,)),
    Fact("call for a fast or abnormal heartbeat or passing out", cud("warning-qt-prolongation"), W, "heartbeat that feels abnormal", (M,)),
    Fact("QT symptoms: dizziness, lightheadedness, fainting (syncope)", cud("warning-qt-prolongation"), W, "lightheadedness or fainting (syncope)", (P,)),
    Fact("tell the care team about every medicine you use", cud("warning-qt-prolongation"), W, "every medicine you use", (P,)),
    # --- tumor lysis syndrome
    Fact("it may cause tumor lysis syndrome, which can be fatal", cud("warning-tumor-lysis-syndrome"), W, "tumor lysis syndrome (TLS), a serious health problem that can be fatal", (M,)),
    Fact("TLS sign: fast or abnormal heartbeat", cud("warning-tumor-lysis-syndrome"), W, "fast heartbeat", (M,)),
    Fact("TLS sign: fainting", cud("warning-tumor-lysis-syndrome"), W, "fainting", (M,)),
    Fact("TLS sign: trouble passing urine", cud("warning-tumor-lysis-syndrome"), W, "trouble passing urine", (M,)),
    Fact("TLS sign: muscle weakness or cramps", cud("warning-tumor-lysis-syndrome"), W, "muscle weakness or cramps", (M,)),
    Fact("TLS sign: upset stomach, vomiting, loose stools, unable to eat", cud("warning-tumor-lysis-syndrome"), W, "loose stools", (M,)),
    Fact("TLS sign: feeling sluggish", cud("warning-tumor-lysis-syndrome"), W, "sluggish", (M,)),
    # --- pregnancy, contraception, breastfeeding, fertility
    Fact("it may harm an unborn baby", cud("warning-embryo-fetal-toxicity"), W, "may harm an unborn baby", (M, L, P)),
    Fact("tell the doctor if you are pregnant or planning a pregnancy", cud("warning-embryo-fetal-toxicity"), W, "planning a pregnancy", (L,)),
    Fact("avoid becoming pregnant during treatment", cud("warning-embryo-fetal-toxicity"), W, "avoid becoming pregnant", (L, P)),
    Fact("if you or your partner becomes pregnant, call the doctor", cud("warning-embryo-fetal-toxicity"), W, "your partner becomes pregnant", (M, L)),
    Fact("contact the provider if pregnancy is suspected", cud("warning-embryo-fetal-toxicity"), W, "think you may be pregnant", (P,)),
    Fact("pregnancy warnings are categorised as pregnancy and lactation", cud("warning-embryo-fetal-toxicity"), "category.coding.code", "Pregnancy", (M, L, P)),
    Fact("a pregnancy test is done before starting", cud("warning-pregnancy-test"), W, "pregnancy test is done before you start", (M, L)),
    Fact("patients who can become pregnant use birth control", cud("warning-contraception-females"), W, "use birth control during treatment", (M, L)),
    Fact("the birth control should be effective", cud("warning-contraception-females"), W, "effective contraception", (P,)),
    Fact("MSK: birth control for 8 months after the last dose", cud("warning-contraception-females"), W, "MSK: 8 months", (M,)),
    Fact("MedlinePlus and Pfizer: for at least 8 months", cud("warning-contraception-females"), W, "MedlinePlus and Pfizer: at least 8 months", (L, P)),
    Fact("ask the doctor which birth control methods will work", cud("warning-contraception-females"), W, "which birth control methods", (L,)),
    Fact("patients whose partner can become pregnant use birth control", cud("warning-contraception-males"), W, "sex partner can become pregnant", (M, L, P)),
    Fact("MSK: for 5 months after the last dose", cud("warning-contraception-males"), W, "MSK: 5 months", (M,)),
    Fact("MedlinePlus and Pfizer: for at least 5 months", cud("warning-contraception-males"), W, "MedlinePlus and Pfizer: at least 5 months", (L, P)),
    Fact("a male patient and his female partner should both use birth control", cud("warning-contraception-males"), W, "should both use it", (L,)),
    Fact("tell the doctor if you are breastfeeding", cud("warning-breastfeeding"), W, "Tell your doctor if you are breastfeeding", (M, L)),
    Fact("do not breastfeed during treatment or for 2 months after", cud("warning-breastfeeding"), W, "2 months after the last dose", (M, P)),
    Fact("MedlinePlus: the doctor may say not to breastfeed for at least 2 months", cud("warning-breastfeeding"), W, "at least 2 months", (L,)),
    Fact("it may lower fertility in men and women", cud("warning-fertility"), W, "both men and women", (M, L)),
    Fact("it may leave you unable to get pregnant or father a child", cud("warning-fertility"), W, "father a child", (M,)),
    Fact("talk with the doctor before treatment if you plan a child", cud("warning-fertility"), W, "plan to have a child", (M,)),
    Fact("ask the doctor about the fertility risks", cud("warning-fertility"), W, "ask your doctor about the risks", (L,)),
    # --- monitoring, providers, other medicines, general advice
    Fact("have blood work and an ECG as the doctor says", cud("warning-monitoring"), W, "blood work and an electrocardiogram", (M,)),
    Fact("the doctor orders tests before, during and after treatment", cud("warning-monitoring"), W, "before, during and after treatment", (L,)),
    Fact("tell every provider, including dentists, that you receive it", cud("warning-tell-all-providers"), W, "pharmacists and dentists", (M,)),
    Fact("tell the doctor and pharmacist about all medicines and health problems", cud("warning-other-medicines"), W, "all your medicines and health problems", (M, L)),
    Fact("that includes prescription, over-the-counter, vitamins, supplements, herbal products", cud("warning-other-medicines"), W, "natural or herbal products", (M, L)),
    Fact("the doctor may adjust doses or watch for side effects", cud("warning-other-medicines"), W, "watch you closely for side effects", (L,)),
    Fact("do not start, stop or change any medicine without checking", cud("warning-other-medicines"), W, "before you start or stop any medicine", (M,)),
    Fact("the interactions listed are not complete", cud("warning-other-medicines"), W, "not a complete list", (M,)),
    Fact("keep a written list of your medicines and carry it", cud("warning-medicine-list"), W, "written list", (L,)),
    Fact("bring the list to each visit or to the hospital", cud("warning-medicine-list"), W, "Bring it to each doctor visit", (L,)),
    Fact("keep your usual diet unless told otherwise", cud("warning-diet"), W, "usual diet", (L,)),
    Fact("call the doctor if you do not improve or get worse", cud("warning-worsening-symptoms"), W, "do not improve or get worse", (M,)),
    Fact("do not share medicines", cud("warning-do-not-share"), W, "do not take anyone else's medicines", (M,)),
    Fact("in an overdose, call poison control or get medical care", cud("warning-overdose"), W, "poison control center", (M,)),
    Fact("in an overdose, say what was taken, how much and when", cud("warning-overdose"), W, "how much, and when", (M,)),
    Fact("a medicine may have more than one patient leaflet", cud("warning-patient-information"), W, "more than one patient leaflet", (M,)),
    Fact("ask for the manufacturer's information for patients", cud("warning-patient-information"), W, "manufacturer's patient information", (L,)),
    Fact("bring questions to the doctor, nurse, pharmacist or other provider", cud("warning-patient-information"), W, "doctor, nurse, pharmacist or other care provider", (M, L)),
    Fact("it may be prescribed for other uses", cud("warning-other-uses"), W, "prescribed for uses not described here", (L,)),
    Fact("many people have no side effects or only minor ones", cud("warning-side-effect-reporting"), W, "many people have none or only minor ones", (M,)),
    Fact("you or your doctor may report a serious side effect", cud("warning-side-effect-reporting"), W, "you or your doctor may send such a report", (L,)),
    Fact("rarely a side effect can be very serious or fatal", cud("warning-side-effect-reporting"), W, "very serious or even fatal", (M,)),
    Fact("the side effects listed are not all that can happen", cud("warning-side-effect-reporting"), W, "not all that can happen", (M, L)),
    Fact("call the doctor about unusual problems or side effect questions", cud("warning-side-effect-reporting"), W, "any unusual problem", (M, L)),
    Fact("report side effects to FDA MedWatch by phone", cud("warning-side-effect-reporting"), W, "1-800-332-1088", (M, L)),
    Fact("or to your national health agency", cud("warning-side-effect-reporting"), W, "national health agency", (M,)),
    Fact("the FDA MedWatch phone number", "Organization/fda", "contact.telecom.value", "1-800-332-1088", (M, L)),
    Fact("the FDA MedWatch web address (MSK)", "Organization/fda", "contact.telecom.value", "https://www.fda.gov/medwatch", (M,)),
    Fact("the FDA MedWatch web address (MedlinePlus)", "Organization/fda", "contact.telecom.value", "https://www.fda.gov/Safety/MedWatch", (L,)),
    # --- interaction
    Fact("medicines that prolong the QT interval interact", cud("interaction-qt-prolonging-medicines"), "interaction.interactant.itemCodeableConcept.text", "prolong the QT interval", (M,)),
    Fact("many medicines can prolong QT; ask the doctor or pharmacist", cud("interaction-qt-prolonging-medicines"), "interaction.management.text", "many medicines can", (M,)),
    # --- undesirable effects and their tiers
    Fact("VOD may be severe, life-threatening or fatal", cud("effect-hepatic-veno-occlusive-disease"), TIER, "VOD may be severe, life-threatening or fatal (Pfizer)", (P,)),
    Fact("liver damage including VOD may be severe or life-threatening", cud("effect-hepatic-veno-occlusive-disease"), TIER, "may be severe or life-threatening (MedlinePlus)", (L,)),
    Fact("low blood cell counts are an undesirable effect", cud("effect-low-blood-counts"), "undesirableEffect.symptomConditionEffect.concept.text", "Low blood cell counts", (M, P)),
    Fact("low blood counts may be life-threatening", cud("effect-low-blood-counts"), TIER, "may be life-threatening (Pfizer)", (P,)),
    Fact("very low counts can lead to bleeding, infections or anemia", cud("effect-low-blood-counts"), TIER, "bleeding problems, infections or anemia (MSK)", (M,)),
    Fact("report the effects of low counts", cud("effect-low-blood-counts"), TIER, "other effects of low counts during treatment (Pfizer)", (P,)),
    Fact("anemia is an undesirable effect", cud("effect-anemia"), EFFECT_CODE, "271737000", (M,)),
    Fact("anemia can follow very low counts", cud("effect-anemia"), TIER, "very low blood cell counts (MSK)", (M,)),
    Fact("liver problems are an undesirable effect", cud("effect-liver-problems"), "undesirableEffect.symptomConditionEffect.concept.text", "Liver problems", (M, P)),
    Fact("liver problems have been life-threatening or fatal", cud("effect-liver-problems"), TIER, "life-threatening or fatal (MSK)", (M,)),
    Fact("liver test results may rise (as an effect)", cud("effect-liver-problems"), TIER, "rising liver test results may develop during treatment (Pfizer)", (P,)),
    Fact("allergic reaction: serious", cud("effect-allergic-reaction"), TIER, "Serious: get medical help right away (MSK)", (M,)),
    Fact("bleeding: serious", cud("effect-bleeding"), EFFECT_CODE, "131148009", (M, L, P)),
    Fact("bleeding: get help at once", cud("effect-bleeding"), TIER, "call your doctor at once or get emergency care (MedlinePlus)", (L,)),
    Fact("infection: serious", cud("effect-infection"), EFFECT_CODE, "40733004", (M, L, P)),
    Fact("infusion-related reaction: serious", cud("effect-infusion-related-reaction"), EFFECT_CODE, "10051792", (M, L, P)),
    Fact("prolonged QT: serious", cud("effect-qt-prolongation"), EFFECT_CODE, "111975006", (M, P)),
    Fact("tumor lysis syndrome: serious, may be fatal", cud("effect-tumor-lysis-syndrome"), TIER, "Serious: may be fatal", (M,)),
    Fact("dizziness, lightheadedness, feeling faint: serious", cud("effect-dizziness"), EFFECT_CODE, "404640003", (M, L)),
    Fact("passing out: serious", cud("effect-fainting"), EFFECT_CODE, "271594007", (M,)),
    Fact("swelling: serious", cud("effect-swelling"), TIER, "Serious: get medical help right away (MSK)", (M,)),
    Fact("anxiety: serious per MSK, less serious per MedlinePlus", cud("effect-anxiety"), TIER, "The sources differ", (M, L)),
    Fact("fatigue or weakness: serious per MedlinePlus, less serious per MSK", cud("effect-fatigue"), TIER, "The sources differ", (M, L)),
    Fact("pale skin: serious", cud("effect-pale-skin"), TIER, "Serious: call your doctor at once", (L,)),
    Fact("slow, fast or irregular heartbeat: serious", cud("effect-abnormal-heartbeat"), TIER, "Serious: call your doctor at once", (L,)),
    Fact("headache: less serious", cud("effect-headache"), EFFECT_CODE, "25064002", (M,)),
    Fact("sweating: less serious", cud("effect-sweating"), EFFECT_CODE, "312230002", (M, L)),
    Fact("back pain: less serious", cud("effect-back-pain"), EFFECT_CODE, "161891005", (M, L)),
    Fact("neck pain: less serious", cud("effect-neck-pain"), EFFECT_CODE, "81680005", (M, L)),
    Fact("arm or leg pain: less serious", cud("effect-limb-pain"), EFFECT_CODE, "90834002", (M, L)),
    Fact("muscle weakness: less serious", cud("effect-muscle-weakness"), TIER, "Less serious", (M, L)),
    Fact("weight gain: less serious", cud("effect-weight-gain"), EFFECT_CODE, "262286000", (M,)),
    Fact("stomach pain: less serious", cud("effect-stomach-pain"), EFFECT_CODE, "21522001", (M, L)),
    Fact("constipation: less serious", cud("effect-constipation"), EFFECT_CODE, "14760008", (M, L)),
    Fact("mouth sores or irritation: less serious", cud("effect-mouth-sores"), EFFECT_CODE, "61170000", (M, L)),
    Fact("diarrhea: common", cud("effect-diarrhea"), "undesirableEffect.frequencyOfOccurrence.text", "Common", (M,)),
    Fact("diarrhea: report if severe or lasting", cud("effect-diarrhea"), TIER, "severe or does not go away (MedlinePlus)", (L,)),
    Fact("vomiting: common", cud("effect-vomiting"), "undesirableEffect.frequencyOfOccurrence.text", "Common", (M,)),
    Fact("nausea (upset stomach): common", cud("effect-nausea"), "undesirableEffect.frequencyOfOccurrence.text", "Common", (M,)),
    Fact("decreased appetite: common", cud("effect-decreased-appetite"), "undesirableEffect.frequencyOfOccurrence.text", "Common", (M,)),
    Fact("for the common stomach effects, ask how to lessen them", cud("effect-nausea"), TIER, "ask your doctor how to lessen it", (M,)),
    Fact("for the common stomach effects, call if severe or not improving", cud("effect-vomiting"), TIER, "does not get better or is severe", (M,)),
    Fact("rash: less serious", cud("effect-rash"), TIER, "Less serious", (L,)),
    Fact("rash with allergic or infusion signs needs help right away", cud("effect-rash"), TIER, "needs help right away", (M, L, P)),
    Fact("rapid weight gain can signal liver trouble", cud("effect-weight-gain"), TIER, "rapid weight gain can be a sign of liver trouble", (L, P)),
    Fact("itching: less serious", cud("effect-itching"), EFFECT_CODE, "418363000", (L,)),
]
# fmt: on

_compiled: dict[str, Any] = {}


def values_at(resource: dict[str, Any], path: str) -> list[str]:
    """Evaluate a FHIRPath on a copy of the resource (fhirpathpy mutates its input) and stringify the results."""
    if path not in _compiled:
        _compiled[path] = fhirpathpy.compile(path)
    return [str(v) for v in _compiled[path](copy.deepcopy(resource))]


class TestCoverage:
    """Every fact the leaflets state is carried, and traced to its leaflets."""

    def test_table_is_large_and_distinct(self) -> None:
        """The table lists well over a hundred distinct facts."""
        assert len({f.statement for f in FACTS}) == len(FACTS)
        assert len(FACTS) > 100

    @pytest.mark.parametrize("fact", FACTS, ids=[f.statement for f in FACTS])
    def test_fact_is_carried(self, fact: Fact, publication: Publication) -> None:
        """The fact's fragment appears at its FHIRPath, and its resource is traced to each stating leaflet."""
        resource = publication.get(fact.resource)
        assert resource is not None, f"{fact.resource} is missing"
        values = values_at(resource, fact.path)
        assert any(fact.fragment.lower() in v.lower() for v in values), (
            f"{fact.fragment!r} not in {fact.path}: {values}"
        )
        if fact.resource.startswith("DocumentReference/"):
            assert {DOC[s] for s in fact.sources} <= {fact.resource}
        else:
            assert {DOC[s] for s in fact.sources} <= source_sets(publication).get(fact.resource, set())

    def test_every_clinical_use_definition_is_covered(self, publication: Publication) -> None:
        """No ClinicalUseDefinition exists that the table does not account for."""
        covered = {f.resource for f in FACTS}
        for cud_resource in publication.of_type("ClinicalUseDefinition"):
            assert f"ClinicalUseDefinition/{cud_resource['id']}" in covered, cud_resource["id"]

    def test_every_leaflet_contributes(self) -> None:
        """Each leaflet is the stated source of many facts."""
        for label in (M, L, P):
            assert sum(label in f.sources for f in FACTS) >= 20, label


def leaves(value: Any, path: str) -> list[tuple[str, str, Any]]:
    """Every primitive in a resource: (indexed path, path without indexes, value)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in leaves(item, f"{path}[{i}]")]
    return [(path, re.sub(r"\[\d+\]", "", path), value)]


def covering(indexed: str, parts: dict[str, set[str]]) -> list[str]:
    """The traced parts (targetPaths) that contain the element at ``indexed``."""
    return [p for p in parts if indexed == p or indexed.startswith((f"{p}.", f"{p}["))]


# What is structure, a link to a resource with its own Provenance, or the record's own bookkeeping.
UNTRACED = re.compile(
    r"^\w+\.(resourceType|id|meta|text|status|author|clinicalUseIssue|indicationGuideline\[0\]\.indication)\b"
    r"|\.dosage\[\d+\]\.type\.text$|\.sequence$"  # our labels for a dosage and its order
)
PER_ELEMENT = (MK, "Medication/besponsa-vial")


def traced_parts(publication: Publication, key: str) -> dict[str, set[str]]:
    """Each targetPath of resource ``key`` with the sources its Provenances name for it."""
    return {
        part: {s["reference"] for s in named}
        for part, named in sources_by_part(key, publication.of_type("Provenance")).items()
    }


class TestPerElementProvenance:
    """The drug and its product trace each fact-bearing element to the sources that state it, and only those."""

    @pytest.mark.parametrize("key", PER_ELEMENT)
    def test_every_fact_bearing_element_is_traced(self, key: str, publication: Publication) -> None:
        """No element of the drug record is left without a source; no whole-resource Provenance blurs them."""
        resource = publication.get(key)
        assert resource is not None
        parts = traced_parts(publication, key)
        assert WHOLE not in parts
        for indexed, _, _ in leaves(resource, resource["resourceType"]):
            if not UNTRACED.search(indexed):
                assert covering(indexed, parts), f"{indexed} has no source"

    @pytest.mark.parametrize("key", PER_ELEMENT)
    def test_every_path_names_an_element(self, key: str, publication: Publication) -> None:
        """Each targetPath is a FHIRPath that finds something in the resource."""
        resource = publication.get(key)
        assert resource is not None
        for part in traced_parts(publication, key):
            assert values_at(resource, part), part

    @pytest.mark.parametrize("key", PER_ELEMENT)
    def test_one_answer_per_element(self, key: str, publication: Publication) -> None:
        """The sources traced to an element are exactly the sources of the facts the table finds in it."""
        resource = publication.get(key)
        assert resource is not None
        parts = traced_parts(publication, key)
        stated: dict[str, set[str]] = {part: set() for part in parts}
        for fact in (f for f in FACTS if f.resource == key):
            found = [
                indexed
                for indexed, plain, value in leaves(resource, resource["resourceType"])
                if plain == f"{resource['resourceType']}.{fact.path}"
                and fact.fragment.lower() in str(value).lower()
            ]
            assert found, fact.statement
            for indexed in found:
                for part in covering(indexed, parts):
                    assert {DOC[s] for s in fact.sources} <= parts[part], (fact.statement, part)
                    stated[part] |= {DOC[s] for s in fact.sources}
        for part, sources in parts.items():
            assert sources == stated[part], (
                f"{part}: traced to {sources - stated[part]} that the table does not list"
            )
