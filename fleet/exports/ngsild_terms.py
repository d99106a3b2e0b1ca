"""The one table from the registry of quantities to Smart Data Models terms, and the JSON-LD
@context that gives those terms their IRIs (docs/integrations.md prints the table).

Each registry quantity (firmware/polylink/quantities.py, by its SenML name) goes to one
attribute of one Smart Data Models entity type, with the UN/CEFACT unit code NGSI-LD's unitCode
carries and the factor from the SenML value to the model's unit: relative humidity as a fraction
(the models say 0..1), pressure in hPa (WeatherObserved says hectopascals), battery level as a
fraction (Device says 1.0 = full). A quantity with no fitting domain attribute is a
DeviceMeasurement (numValue + unit + controlledProperty). Checked against the models' own
attribute metadata (pysmartdatamodels) by tests/fleet/exports/test_ngsild_terms.py.
"""

from typing import NamedTuple

SDM = "https://smartdatamodels.org/"
# The models' subjects (their repositories), which name the IRIs of their types and attributes.
SUBJECTS = {"WeatherObserved": "dataModel.Weather", "AirQualityObserved": "dataModel.Environment",
            "Device": "dataModel.Device", "DeviceMeasurement": "dataModel.Device"}
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


class Term(NamedTuple):
    """Where one quantity goes: entity type, attribute, UN/CEFACT code, factor from SenML."""

    model: str
    attribute: str
    unit_code: str
    factor: float
    controlled: str  # the model's controlledProperty word for it


# Registry name -> Term. A quantity missing here goes out as a DeviceMeasurement with the unit
# its SenML unit maps to in MEASUREMENT_UNITS.
QUANTITIES = {
    "temperature": Term("WeatherObserved", "temperature", "CEL", 1, "temperature"),
    "humidity": Term("WeatherObserved", "relativeHumidity", "C62", 0.01, "humidity"),
    "pressure": Term("WeatherObserved", "atmosphericPressure", "A97", 0.01,
                     "atmosphericPressure"),
    "illuminance": Term("WeatherObserved", "illuminance", "LUX", 1, "illuminance"),
    "wind_speed": Term("WeatherObserved", "windSpeed", "MTS", 1, "windSpeed"),
    "wind_direction": Term("WeatherObserved", "windDirection", "DD", 1, "windDirection"),
    "co2": Term("AirQualityObserved", "co2", "59", 1, "airPollution"),
    "pm2_5": Term("AirQualityObserved", "pm25", "GQ", 1, "airPollution"),
    "pm10": Term("AirQualityObserved", "pm10", "GQ", 1, "airPollution"),
    "battery_level": Term("Device", "batteryLevel", "C62", 0.01, "batteryLife"),
}

# SenML unit -> (UN/CEFACT common code, factor) for DeviceMeasurement.unit and numValue.
MEASUREMENT_UNITS = {
    "Cel": ("CEL", 1), "%RH": ("P1", 1), "%": ("P1", 1), "V": ("VLT", 1), "A": ("AMP", 1),
    "W": ("WTT", 1), "Pa": ("PAL", 1), "lx": ("LUX", 1), "ppm": ("59", 1), "ug/m3": ("GQ", 1),
    "Bspl": ("2N", 10),  # decibels: ten per bel
    "m": ("MTR", 1), "m/s": ("MTS", 1), "deg": ("DD", 1), "lat": ("DD", 1), "lon": ("DD", 1),
    "count": ("C62", 1),
}

# The attributes every entity we send may carry besides the table's.
COMMON = {"WeatherObserved": ("dateObserved", "refDevice", "location", "name"),
          "AirQualityObserved": ("dateObserved", "refDevice", "location", "name"),
          "DeviceMeasurement": ("dateObserved", "refDevice", "location", "numValue", "unit",
                                "controlledProperty", "measurementType", "name"),
          "Device": ("batteryLevel", "firmwareVersion", "deviceState", "dateLastValueReported",
                     "location", "category", "name", "controlledProperty")}


def _attribute_iri(model: str, attribute: str) -> str:
    if attribute == "location":
        return "https://uri.etsi.org/ngsi-ld/location"  # the core context's own term
    if attribute in ("dateObserved", "name"):
        return SDM + attribute  # shared by every model
    return f"{SDM}{SUBJECTS[model]}/{attribute}"


def context() -> dict:
    """The JSON-LD context the Link header names: the NGSI-LD core context, then each entity
    type with its attributes' IRIs scoped to it (the same word, e.g. temperature, has another
    IRI in WeatherObserved than in AirQualityObserved), as JSON-LD 1.1 type-scoped contexts."""
    scoped: dict = {"@version": 1.1}
    for model, subject in SUBJECTS.items():
        attrs = {t.attribute for t in QUANTITIES.values() if t.model == model}
        attrs |= set(COMMON[model])
        scoped[model] = {"@id": f"{SDM}{subject}/{model}", "@context": {
            a: _attribute_iri(model, a) for a in sorted(attrs) if a != "location"}}
    return {"@context": [CORE_CONTEXT, scoped]}
