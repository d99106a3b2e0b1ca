// Register-devices page: scan the label's QR code with the phone's camera where the browser has
// BarcodeDetector (the typed field always works; the server parses TR005 or a bare DevEUI), and
// fill the position from the phone's location.
"use strict";
(function () {
  const scan = document.getElementById("scan");
  const video = document.getElementById("camera");
  const code = document.getElementById("code");
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    scan.hidden = false;
    scan.addEventListener("click", async function () {
      const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      const stop = function () { stream.getTracks().forEach(function (t) { t.stop(); }); video.hidden = true; };
      const look = async function () {
        const found = await detector.detect(video);
        if (found.length) { code.value = found[0].rawValue; stop(); return; }
        requestAnimationFrame(look);
      };
      look();
    });
  }
  const here = document.getElementById("here");
  if (navigator.geolocation) {
    here.hidden = false;
    here.addEventListener("click", function () {
      navigator.geolocation.getCurrentPosition(function (p) {
        document.getElementById("lat").value = p.coords.latitude.toFixed(6);
        document.getElementById("lon").value = p.coords.longitude.toFixed(6);
      });
    });
  }
})();
