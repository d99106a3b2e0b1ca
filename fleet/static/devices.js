// Register-devices page: scan the label's QR code with the phone's camera where the browser can
// read QR codes (BarcodeDetector with qr_code; Chrome on Android, Safari), else the typed field,
// which always works (the server parses TR005 or a bare DevEUI); fill the position from the
// phone's location.
"use strict";
(async function () {
  const scan = document.getElementById("scan");
  const video = document.getElementById("camera");
  const code = document.getElementById("code");
  let formats = [];
  try {
    formats = "BarcodeDetector" in window ? await window.BarcodeDetector.getSupportedFormats() : [];
  } catch (e) {
    formats = [];
  }
  if (formats.includes("qr_code") && navigator.mediaDevices) {
    scan.hidden = false;
    scan.addEventListener("click", async function () {
      let stream;
      try {
        const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
        video.srcObject = stream;
        video.hidden = false;
        await video.play();
        const stop = function () { stream.getTracks().forEach(function (t) { t.stop(); }); video.hidden = true; };
        const look = async function () {
          try {
            const found = await detector.detect(video);
            if (found.length) { code.value = found[0].rawValue; stop(); return; }
            requestAnimationFrame(look);
          } catch (e) {
            stop();
            code.placeholder = "camera failed (" + e.name + "): type the DevEUI";
          }
        };
        look();
      } catch (e) {
        if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
        code.placeholder = "no camera (" + e.name + "): type the DevEUI";
        code.focus();
      }
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
