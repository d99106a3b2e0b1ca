// Register-devices page: scan the label's QR code with the phone's camera, else the typed field,
// which always works (the server parses TR005 or a bare DevEUI); fill the position from the
// phone's location.
// The QR reader: the browser's BarcodeDetector where it reads qr_code (Chrome on Android,
// Safari), else jsQR (npm `jsqr`, pinned in fleet/static/vendor/package.json), loaded on the first
// scan only: Chromium on Linux and Firefox have no QR BarcodeDetector.
"use strict";
(async function () {
  const scan = document.getElementById("scan");
  const video = document.getElementById("camera");
  const code = document.getElementById("code");
  const scanned = document.getElementById("scanned");
  const EVERY_MS = 150; // a frame ~7 times a second: quick for a person, light on a phone

  // What a technician should check before registering: the DevEUI the code carries.
  function devEui(text) {
    const t = text.trim();
    if (/^LW:/i.test(t)) {
      const parts = t.split(":");
      return parts.length >= 5 ? parts[3].toUpperCase() : null;
    }
    const eui = t.replace(/[\s:-]/g, "").toUpperCase();
    return /^[0-9A-F]{16}$/.test(eui) ? eui : null;
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("cannot load " + src)); };
      document.head.appendChild(s);
    });
  }

  let formats = [];
  try {
    formats = "BarcodeDetector" in window ? await window.BarcodeDetector.getSupportedFormats() : [];
  } catch (e) {
    formats = [];
  }

  // A function that reads the QR code in the video's current frame, or null.
  async function qrReader() {
    if (formats.includes("qr_code")) {
      const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      return async function () {
        const found = await detector.detect(video);
        return found.length ? found[0].rawValue : null;
      };
    }
    if (!window.jsQR) await loadScript(scan.dataset.jsqr);
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    return async function () {
      if (!video.videoWidth) return null;
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      ctx.drawImage(video, 0, 0);
      const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const found = window.jsQR(img.data, img.width, img.height, { inversionAttempts: "attemptBoth" });
      return found && found.data ? found.data : null;
    };
  }

  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    scan.hidden = false;
    scan.addEventListener("click", async function () {
      let stream;
      const stop = function () {
        if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
        video.hidden = true;
      };
      try {
        const read = await qrReader();
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
        video.srcObject = stream;
        video.hidden = false;
        scanned.textContent = "Point the camera at the label's QR code.";
        await video.play();
        const look = async function () {
          try {
            const text = await read();
            if (text) {
              stop();
              code.value = text;
              const eui = devEui(text);
              scanned.textContent = eui ? "DevEUI " + eui + " read from the code."
                : "Read \"" + text.slice(0, 40) + "\": not a DevEUI code, check it.";
              return;
            }
            setTimeout(look, EVERY_MS);
          } catch (e) {
            stop();
            scanned.textContent = "Camera failed (" + e.name + "): type the DevEUI.";
          }
        };
        look();
      } catch (e) {
        stop();
        scanned.textContent = "No camera or QR reader (" + (e.name || e.message) + "): type the DevEUI.";
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
