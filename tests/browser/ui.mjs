// Browser scenarios for the web UI, in Debian's chromium through playwright-core (no download).
// Run by tests/browser/test_ui_browser.py, which starts the real fleet, broker and a simulated
// node and passes: BASE, PASSWORD, NODE (a node that reports every few seconds), ARTIFACTS.
// Prints one JSON line of what it saw; exits non-zero with the reason on the first failure.
import { chromium } from "playwright-core";

const { BASE, PASSWORD, NODE, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = {};

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

async function login(page, user) {
  await page.goto(BASE + "/nodes/");
  check(page.url().includes("/auth/login"), "a fresh session is sent to the login page");
  await page.fill("#username", user);
  await page.fill("#password", PASSWORD);
  // A predicate on the path, not the glob "**/nodes/": the login page's own URL ends in
  // "?next=/nodes/", which the glob matches at once, racing the next step against navigation.
  await Promise.all([page.waitForURL((url) => url.pathname === "/nodes/"),
    page.click("button[type=submit]")]);
}

async function fitsWidth(page, width, what) {
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  // 1 px of slack: Chromium rounds subpixel layout up in scrollWidth at deviceScaleFactor 2.
  if (w > width + 1) {
    await shot(page, "failed-width");
    const wide = await page.evaluate((limit) => [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > limit)
      .slice(0, 5).map((el) => el.tagName + "." + el.className), width);
    check(false, `${what} fits ${width} px without sideways scrolling (is ${w} px: ${wide})`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
}

async function technician(browser) {
  const context = await browser.newContext({
    viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    geolocation: { latitude: 52.520008, longitude: 13.404954, accuracy: 8 },
    permissions: ["geolocation"],
  });
  const page = await context.newPage();
  await login(page, "tech");
  await fitsWidth(page, 360, "node list");

  // Find the node by search.
  await page.fill("input[name=q]", NODE);
  await Promise.all([page.waitForURL(/q=/), page.press("input[name=q]", "Enter")]);
  const links = page.locator("table.fleet tbody a");
  check((await links.count()) === 1, "search finds exactly the node");
  await shot(page, "mobile-1-search");
  await Promise.all([page.waitForURL("**/nodes/" + NODE), links.first().click()]);
  await fitsWidth(page, 360, "node page");

  // A live value changes when the simulated node reports, without a reload.
  await page.locator("[data-live-conn]", { hasText: "live" }).waitFor({ timeout: 15000 });
  const value = page.locator("[data-live-value]").first();
  const before = await value.textContent();
  const marker = await page.evaluate(() => (window.__notReloaded = true));
  await page.waitForFunction(
    ([sel, old]) => document.querySelector(sel).textContent !== old,
    ["[data-live-value]", before], { timeout: 45000 });
  check(await page.evaluate(() => window.__notReloaded === true), "the page was not reloaded");
  seen.live = { before, after: await value.textContent(), marker };
  await shot(page, "mobile-2-node-live");

  // Send a command and see its result arrive.
  await page.selectOption("select[name=command]", "identify");
  await Promise.all([page.waitForURL(/#commands$/), page.click("form[action$='/commands'] button")]);
  const flash = await page.locator(".flash").first().textContent();
  const cid = (flash.match(/id (\d+)/) || [])[1];
  check(cid, "the page says the command was sent: " + flash);
  const result = page.locator(`[data-live-command="${cid}"]`);
  await page.waitForFunction((sel) => /^ok/.test(document.querySelector(sel).textContent),
    `[data-live-command="${cid}"]`, { timeout: 30000 });
  seen.command = { cid: Number(cid), result: await result.textContent() };
  await shot(page, "mobile-3-command-result");

  // Set the node's position from the phone's location.
  await page.fill("input[name=location]", "Lamppost 12, Main St");
  await page.click("[data-geolocate]");
  await page.waitForFunction(() => document.querySelector("#place-form").lat.value !== "");
  await Promise.all([page.waitForURL(/#place$/), page.click("#place-form button[type=submit]")]);
  seen.place = await page.locator("#place + p").textContent();
  check(seen.place.includes("52.52001"), "the saved position is shown: " + seen.place);

  for (const [name, path] of [["overview", "/"], ["map", "/map"], ["alerts", "/alerts/"]]) {
    await page.goto(BASE + path);
    await fitsWidth(page, 360, name);
    await shot(page, "mobile-4-" + name);
  }
  seen.mapDots = await page.goto(BASE + "/map").then(() => page.locator("svg circle").count());
  await context.close();
}

async function operator(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await login(page, "op");
  await page.click("summary");
  await page.selectOption("select[name=status]", "online");
  await page.fill("input[name=q]", "sim-");
  await Promise.all([page.waitForURL(/status=online/), page.click("form[role=search] button")]);
  const boxes = page.locator("input[name=ids]");
  seen.filtered = await boxes.count();
  check(seen.filtered >= 2, "the filter lists the online simulated nodes");
  await boxes.nth(0).check();
  await boxes.nth(1).check();
  await page.fill("input[name=bulk_tag]", "route-7");
  await Promise.all([page.waitForLoadState("load"), page.click("button[value=tag]")]);
  seen.bulk = await page.locator(".flash").first().textContent();
  check(/added to 2 of 2 nodes/.test(seen.bulk), "bulk tag applied: " + seen.bulk);
  await page.goto(BASE + "/nodes/?tag=route-7");
  seen.tagged = await page.locator("input[name=ids]").count();
  check(seen.tagged === 2, "two nodes carry the new tag");
  await shot(page, "desktop-1-bulk-tag");
  await page.goto(BASE + "/");
  await shot(page, "desktop-2-overview");
  await context.close();
}

async function admin(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await login(page, "boss");
  await page.goto(BASE + "/admin/audit");
  seen.auditRows = await page.locator("table.list tbody tr").count();
  await shot(page, "desktop-3-audit");
  await context.close();
}

const browser = await chromium.launch({
  executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  await technician(browser);
  await operator(browser);
  await admin(browser);
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
