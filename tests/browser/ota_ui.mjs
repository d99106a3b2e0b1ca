// The Updates pages in Debian's chromium (playwright-core, no download), run by
// tests/e2e/test_ota_end_to_end.py once a bad release's rollout paused itself.
// Env: BASE, USER, PASSWORD, RID (the paused rollout), ARTIFACTS. Prints one JSON line.
import { chromium } from "playwright-core";

const { BASE, USER, PASSWORD, RID, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  await page.goto(BASE + "/auth/login");
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  await page.click("nav >> text=Updates");
  await page.waitForURL("**/updates/");
  const row = page.locator(`tr:has(a[href$="/updates/rollouts/${RID}"])`);
  seen.list = await row.innerText();
  check(seen.list.includes("paused") && seen.list.includes("crash loop"),
    "the rollout list shows the paused rollout and why");
  await page.screenshot({ path: `${ARTIFACTS}/updates.png`, fullPage: true });
  await Promise.all([page.waitForURL(`**/updates/rollouts/${RID}`),
    page.click(`a[href$="/updates/rollouts/${RID}"]`)]);
  seen.nodes = await page.locator("table >> nth=1").innerText();
  check(seen.nodes.includes("rolled_back") && seen.nodes.includes("pending"),
    "the node table shows the rolled-back node and the ones never offered");
  await page.screenshot({ path: `${ARTIFACTS}/rollout.png`, fullPage: true });
  // An operator aborts through the CSRF-protected form.
  await Promise.all([page.waitForNavigation(), page.click("button:text('Abort')")]);
  seen.after = await page.locator("main p >> nth=1").innerText();
  check(seen.after.includes("aborted"), "the page says the rollout is aborted");
  check((await page.locator("button:text('Resume')").count()) === 0, "no resume after abort");
  process.stdout.write(JSON.stringify(seen) + "\n");
} finally {
  await browser.close();
}
