// Every page of the web UI on a 360 x 740 phone, in Debian's chromium through playwright-core.
// Run by tests/browser/test_phone_browser.py with: BASE, USER, PASSWORD, PAGES (a JSON list of
// paths), ARTIFACTS. Prints one JSON line: each page's width, and each chart's text as rendered.
import { chromium } from "playwright-core";

const { BASE, USER, PASSWORD, PAGES, ARTIFACTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const seen = { widths: {}, wide: {}, charts: [] };

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

// A chart is an <img> of an SVG, whose text the page cannot reach: draw the same SVG inline at
// the size the <img> has on this page and measure its text elements there.
async function measureCharts(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const img of document.querySelectorAll("img.chart")) {
      const box = img.getBoundingClientRect();
      const svgText = await (await fetch(img.src)).text();
      const holder = document.createElement("div");
      holder.style.cssText = `position:absolute;left:0;top:0;width:${box.width}px;height:${box.height}px`;
      holder.innerHTML = svgText;
      const svg = holder.querySelector("svg");
      svg.setAttribute("width", box.width);
      svg.setAttribute("height", box.height);
      document.body.appendChild(holder);
      const texts = [...svg.querySelectorAll("text")];
      // The size a reader sees: the font size times the scale from the viewBox to the page.
      const scale = svg.getScreenCTM().a;
      const sizes = texts.map((t) => parseFloat(getComputedStyle(t).fontSize) * scale);
      const heights = texts.map((t) => t.getBoundingClientRect().height);
      out.push({
        src: img.getAttribute("src"), width: Math.round(box.width),
        title: svg.querySelector("text.title")?.textContent.trim() || "",
        texts: texts.map((t) => t.textContent.trim()),
        smallest: Math.min(...sizes), tallest: Math.max(...heights),
      });
      holder.remove();
    }
    return out;
  });
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
  await page.screenshot({ path: `${ARTIFACTS}/login-form.png`, fullPage: true });
  seen.widths["/auth/login"] = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.fill("#username", USER);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL((url) => !url.pathname.startsWith("/auth/")),
    page.click("button[type=submit]")]);
  let n = 0;
  for (const path of JSON.parse(PAGES)) {
    if (path === "/auth/login") continue;  // seen above, before the session existed
    const response = await page.goto(BASE + path);
    const type = response.headers()["content-type"] || "";
    check(type.startsWith("text/html"), `${path} is a page (it answers ${type})`);
    await page.waitForLoadState("load");
    // Folded parts (filters, the export box, the API page's operations) must fit when opened.
    await page.evaluate(() => document.querySelectorAll("details").forEach((d) => { d.open = true; }));
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    seen.widths[path] = width;
    if (width > 360) {
      seen.wide[path] = await page.evaluate(() => [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > 361)
        .slice(0, 6).map((el) => el.tagName.toLowerCase() + (el.className ? "." + el.className : "")));
    }
    if (await page.locator("img.chart").count()) {
      seen.charts.push(...await measureCharts(page));
    }
    // Lazy images below the fold would be blank in a full-page screenshot.
    await page.evaluate(() => Promise.all([...document.images].map((img) => {
      img.loading = "eager";
      return img.complete ? null : new Promise((done) => { img.onload = img.onerror = done; });
    })));
    const name = String(++n).padStart(2, "0") + path.replace(/[^A-Za-z0-9]+/g, "-");
    await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
    for (const part of ["facts", "charts"]) {  // close enough to read, as a person would
      const first = page.locator("." + part).first();
      // A node with no readings yet has an empty (invisible) chart row: nothing to show.
      if (await first.count() && await first.isVisible()) {
        await first.screenshot({ path: `${ARTIFACTS}/${name}.${part}.png` });
      }
    }
  }
  // The same charts at a desk: side by side, not blown up (their text stays about 13 px).
  const desk = await browser.newContext({ viewport: { width: 1280, height: 900 }, storageState: await context.storageState() });
  const wide = await desk.newPage();
  const nodePage = JSON.parse(PAGES).find((p) => /^\/nodes\/[^/?]+$/.test(p) && !p.includes("no-such"));
  await wide.goto(BASE + nodePage);
  await wide.locator(".charts").first().screenshot({ path: `${ARTIFACTS}/desktop.charts.png` });
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
