// A vendor-style codec written for these tests, in the shape vendors publish for The Things
// Stack and ChirpStack: port 2 carries temperature in tenths of °F, pressure in tenths of hPa,
// humidity in % and battery in mV; port 3 says the device rebooted.
function decodeUplink(input) {
  var b = input.bytes;
  if (input.fPort === 3) {
    return { data: { event: "reboot" }, warnings: ["device rebooted"] };
  }
  if (input.fPort !== 2) {
    return { errors: ["unknown fPort " + input.fPort] };
  }
  if (b.length < 7) {
    return { errors: ["payload too short: " + b.length + " bytes, need 7"] };
  }
  var t = (b[0] << 8 | b[1]);
  if (t & 0x8000) t -= 0x10000;
  return {
    data: {
      air: { temperature_f: t / 10, pressure_hpa: (b[2] << 8 | b[3]) / 10 },
      humidity_pct: b[4],
      battery_mv: b[5] << 8 | b[6],
      received_year: input.recvTime.getUTCFullYear()
    },
    warnings: []
  };
}

function encodeDownlink(input) {
  if (typeof input.data.interval !== "number") {
    return { errors: ["interval (seconds) is required"] };
  }
  var s = input.data.interval;
  return { bytes: [0x01, (s >> 8) & 0xff, s & 0xff], fPort: 10 };
}
