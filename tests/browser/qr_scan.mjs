// A technician registers devices by pointing the phone's camera at their QR labels: Chromium's
// fake camera plays a .y4m file showing the code (one browser per file: the file is a launch
// flag). Run by tests/browser/test_qr_scan_browser.py with BASE, USER, PASSWORD, PROFILE,
// ARTIFACTS, CHROMIUM and CASES (JSON [{video, name}]). Prints one JSON line of what it saw.
import { chromium } from "playwright-core";

const { BASE, USER, PASSWORD, PROFILE, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = [];

for (const [i, c] of JSON.parse(process.env.CASES).entries()) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream", `--use-file-for-fake-video-capture=${c.video}`],
  });
  try {
    const context = await browser.newContext({
      viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    const page = await context.newPage();
    await page.goto(BASE + "/auth/login");
    await page.fill("#username", USER);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL((url) => !url.pathname.startsWith("/auth/")),
      page.click("button[type=submit]")]);
    await page.goto(BASE + "/devices/add");
    const got = {
      qrFormats: await page.evaluate(async () => ("BarcodeDetector" in window
        ? await window.BarcodeDetector.getSupportedFormats() : [])),
      typedBefore: await page.inputValue("#code"),
    };
    await page.click("#scan");
    await page.waitForFunction(() => document.getElementById("code").value !== "",
      null, { timeout: 20000 });
    got.code = await page.inputValue("#code");
    got.status = await page.locator("#scanned").innerText();
    got.jsqrLoaded = await page.evaluate(() => typeof window.jsQR === "function");
    got.cameraStopped = await page.locator("#camera").isHidden();
    await page.fill("input[name=name]", c.name);
    await page.selectOption("select[name=profile]", PROFILE);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST"),
      page.click("#one button[type=submit]")]);
    await page.waitForLoadState("load");
    got.registerStatus = answer.status();
    got.flash = await page.locator(".flash").allInnerTexts();
    got.width = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.screenshot({ path: `${ARTIFACTS}/scanned-${i}.png`, fullPage: true });
    seen.push(got);
  } finally {
    await browser.close();
  }
}
console.log(JSON.stringify(seen));
