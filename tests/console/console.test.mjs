// Drives the admin console in Debian's Chromium (playwright-core): sign in, every page with
// mock traffic (a screenshot of each), a key created in the console answers a chat request
// and fails once revoked there, the playground streams an answer, the overview's figures equal
// /metrics, and the page makes no request outside the gateway.
//
// node console.test.mjs ADMIN_URL ADMIN_TOKEN PROXY_URL STATUS_URL SCREENSHOT_DIR
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [adminUrl, adminToken, proxyUrl, statusUrl, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const outside = [];
await page.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(adminUrl)) return route.continue();
  outside.push(url);
  return route.abort();
});
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(String(e)));

async function open(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForSelector(`#page-${hash.slice(1)}[data-ready="true"]`);
}

async function chat(key) {
  const r = await fetch(`${proxyUrl}/ai/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "m1", messages: [{ role: "user", content: "hello from the console test" }] }),
  });
  const body = await r.json();
  return [r.status, body.error ? body.error.code : null];
}

function metricSum(text, name, filter = () => true) {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const [series, value] = line.split(/\s+(?=[^\s]+$)/);
    if (filter(series)) sum += Number(value);
  }
  return sum;
}

try {
  // Sign in: a wrong token is refused, the right one opens the overview.
  await page.goto(`${adminUrl}/`);
  await page.fill("#token", "not-the-token");
  await page.click("#signin button");
  await page.waitForSelector("#signin-error:not(:empty)");
  await page.fill("#token", adminToken);
  await page.click("#signin button");
  await page.waitForSelector('#page-overview[data-ready="true"]');
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  // A key created in the console works, and fails once revoked in the console.
  await open("#keys");
  await page.fill("#consumer-search", "we");
  await page.click('[data-consumer="web"]');
  await page.waitForSelector("#new-key");
  await page.fill('#new-key input[name="name"]', "from-the-console");
  await page.click("#new-key button");
  const secret = (await page.textContent("#new-secret")).trim();
  assert.match(secret, /^tg_/);
  assert.deepEqual(await chat(secret), [200, null]);
  await page.screenshot({ path: `${shots}/keys.png`, fullPage: true });
  await page.click("button[data-revoke]:not([disabled])");
  await page.waitForSelector(".badge.revoked");
  assert.deepEqual(await chat(secret), [401, "api_key_revoked"]);

  // The playground streams an answer through the pipeline.
  await open("#playground");
  await page.fill('#playground input[name="consumer"]', "web");
  await page.selectOption('#playground select[name="model"]', "m1");
  await page.fill('#playground textarea[name="prompt"]', "stream this answer word by word");
  await page.click("#playground button");
  await page.waitForSelector('#answer[data-done="true"]');
  const answer = (await page.textContent("#answer")).trim();
  assert.ok(answer.length > 0, "the playground showed no answer");
  await page.screenshot({ path: `${shots}/playground.png`, fullPage: true });

  for (const name of ["usage", "models", "logs"]) {
    await open(`#${name}`);
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  }
  // The logs page filters.
  await page.selectOption('#log-filters select[name="status"]', "4xx");
  await page.click("#log-filters button");
  await page.waitForSelector('#page-logs [data-query*="status=4xx"]');
  const statuses = await page.$$eval("#page-logs tbody tr td:nth-child(4)", (tds) => tds.map((td) => Number(td.textContent.slice(0, 3))));
  assert.ok(statuses.every((s) => s >= 400 && s < 500), `4xx filter showed ${statuses}`);

  // The overview's figures equal /metrics for the same traffic.
  await open("#overview");
  const metrics = await (await fetch(`${statusUrl}/metrics`)).text();
  const shown = async (k) => Number((await page.textContent(`[data-figure="${k}"]`)).replace(/[^0-9.]/g, ""));
  assert.equal(await shown("requests"), metricSum(metrics, "tollgate_requests_total"), "requests");
  assert.equal(await shown("prompt tokens"), metricSum(metrics, "tollgate_tokens_total", (s) => s.includes('type="prompt"')), "prompt tokens");
  assert.equal(await shown("completion tokens"), metricSum(metrics, "tollgate_tokens_total", (s) => s.includes('type="completion"')), "completion tokens");
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  assert.deepEqual(outside, [], "the console reached outside the gateway");
  assert.deepEqual(consoleErrors, [], "the page threw");
  console.log("console: all checks passed");
} finally {
  await browser.close();
}
