// A technician sets up a new kind of device on a 360 px phone: creates a profile with a pasted
// JS codec, pastes a captured payload and sees the decoded readings before saving, saves, then
// registers a device by its QR text, typed (the camera scan: qr_scan.mjs).
// Run by tests/browser/test_device_setup_browser.py with BASE, USER, PASSWORD, CODEC, ARTIFACTS.
// Prints one JSON line of what it saw.
import { chromium } from "playwright-core";

const { BASE, USER, PASSWORD, CODEC, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = {};

// Click a form's button and wait for the page its POST leads to (the URL may not change).
async function submit(page, selector) {
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"), page.click(selector)]);
  await page.waitForLoadState("load");
  return answer.status();
}
const browser = await chromium.launch({
  executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"],
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
  await page.goto(BASE + "/profiles/");
  await page.fill("input[name=name]", "acme-wx2");
  await page.selectOption("select[name=codec]", "js");
  await page.fill("textarea[name=source]", CODEC);
  await page.fill("textarea[name=fields]", JSON.stringify([
    { field: "air.temperature_f", quantity: "temperature", unit: "°F" },
    { field: "air.pressure_hpa", quantity: "pressure", unit: "hPa" },
    { field: "humidity_pct", quantity: "humidity", unit: "%" },
    { field: "battery_mv", quantity: "battery_voltage", unit: "mV" }]));
  await page.fill("input[name=interval]", "600");
  await page.fill("textarea[name=payload]", "02D227953010B8\nAtInlTAQ");
  await page.fill("input[name=fport]", "2");
  seen.tryStatus = await submit(page, "button[value=try]");
  await page.waitForSelector("#tried, .flash", { timeout: 10000 });
  seen.flashAfterTry = await page.locator(".flash").allInnerTexts();
  seen.tried = await page.locator("ul.tried").innerText();
  seen.triedWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  seen.listedBeforeSave = (await page.locator("table").innerText()).includes("acme-wx2");
  await page.screenshot({ path: `${ARTIFACTS}/tried.png`, fullPage: true });
  seen.saveStatus = await submit(page, "button[value=save]");
  seen.listedAfterSave = (await page.locator("table").innerText()).includes("acme-wx2");
  await page.goto(BASE + "/devices/add");
  await page.waitForLoadState("networkidle");
  seen.qrFormats = await page.evaluate(async () => ("BarcodeDetector" in window
    ? await window.BarcodeDetector.getSupportedFormats() : []));
  seen.scanButtonShown = await page.locator("#scan").isVisible();
  await page.fill("#code", "LW:D0:70B3D57ED0000000:70B3D57ED0001002:AC3E0002");
  await page.fill("input[name=name]", "Roof of the town hall");
  await page.selectOption("select[name=profile]", "acme-wx2");
  await page.fill("#lat", "52.3702");
  await page.fill("#lon", "4.8952");
  seen.registerStatus = await submit(page, "#one button[type=submit]");
  seen.flash = await page.locator(".flash").allInnerTexts();
  seen.devicesWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.screenshot({ path: `${ARTIFACTS}/registered.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
