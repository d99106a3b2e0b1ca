"""Device profiles: how another supplier's device payload becomes readings of the registry.

A profile names a codec (polylink, lpp, js, passthrough, senml), the mapping of the codec's
fields to registry quantities with unit conversion into the registry's SenML unit, the expected
reporting interval and the downlink commands its codec can encode. See docs/devices.md.
"""

POLYLINK = "polylink"  # our protocol and firmware: the only profile that is updated over the air
CODECS = ("polylink", "lpp", "js", "passthrough", "senml")
