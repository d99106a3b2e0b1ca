"""JSON-LD expansion of NGSI-LD payloads offline: pyld with a document loader that knows the
NGSI-LD core context (the subset of its terms our payloads use, fixtures/, copied from ETSI GS
CIM 009's core context) and the fleet's own context (fleet/exports/ngsild_terms.py)."""

import json
from pathlib import Path

from pyld import jsonld

from fleet.exports import ngsild_terms

CORE = json.loads((Path(__file__).parent / "fixtures" /
                   "ngsi-ld-core-context-subset.jsonld").read_text())
FLEET_CONTEXT_URL = "https://fleet.example/static/ngsi-ld-context.jsonld"


def loader(url, options=None):
    docs = {ngsild_terms.CORE_CONTEXT: CORE, FLEET_CONTEXT_URL: ngsild_terms.context()}
    if url not in docs:
        raise jsonld.JsonLdError(f"offline: no document {url}", "loading document failed")
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
            "document": docs[url]}


def expand(entity: dict, context_url: str = FLEET_CONTEXT_URL) -> dict:
    """One entity sent as application/json with a Link header, expanded as a broker would."""
    (expanded,) = jsonld.expand(dict(entity, **{"@context": context_url}),
                                {"documentLoader": loader})
    return expanded
