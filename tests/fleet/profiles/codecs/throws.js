// A codec that fails on every frame, as a vendor's codec does after a firmware change.
function decodeUplink(input) {
  throw new TypeError("cannot read byte " + input.bytes.length + " of the payload");
}
