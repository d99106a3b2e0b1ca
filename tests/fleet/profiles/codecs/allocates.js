// A codec that allocates without end.
function decodeUplink(input) {
  var keep = [];
  while (true) { keep.push(new Array(4096).fill(input.bytes[0])); }
}
