// Two organisations' people on a 360 x 740 phone, in Debian's chromium through playwright-core.
// Run by tests/browser/test_organisations_browser.py with: BASE, PEOPLE (a JSON list of
// {user, password, pages}), ARTIFACTS. Prints one JSON line: for each person and page, the page's
// width, the node pages it links to, how many "shared" marks it shows and where its forms post.
import { chromium } from "playwright-core";

const { BASE, PEOPLE, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = {};

const browser = await chromium.launch({
  executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  for (const person of JSON.parse(PEOPLE)) {
    const context = await browser.newContext({
      viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    const page = await context.newPage();
    await page.goto(BASE + "/auth/login");
    await page.fill("#username", person.user);
    await page.fill("#password", person.password);
    await Promise.all([page.waitForURL((url) => !url.pathname.startsWith("/auth/")),
      page.click("button[type=submit]")]);
    seen[person.user] = {};
    for (const path of person.pages) {
      const response = await page.goto(BASE + path);
      await page.waitForLoadState("load");
      seen[person.user][path] = await page.evaluate(() => ({
        width: document.documentElement.scrollWidth,
        nodes: [...document.querySelectorAll("main a[href^='/nodes/']")]
          .map((a) => new URL(a.href).pathname).filter((p) => /^\/nodes\/[^/]+$/.test(p)),
        shared: document.querySelectorAll("main .shared").length,
        posts: [...document.querySelectorAll("main form[method=post]")]
          .map((f) => new URL(f.action).pathname),
      }));
      seen[person.user][path].status = response.status();
      const name = person.user + path.replace(/[^A-Za-z0-9]+/g, "-");
      await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
    }
    await context.close();
  }
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
