// A codec that never returns.
function decodeUplink(input) {
  var i = 0;
  while (true) { i++; }
}
