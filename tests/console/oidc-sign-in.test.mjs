// The console's sign-in through an OIDC provider (oidc-provider's development sign-in page)
// in Debian's Chromium: a user outside the admin group is sent back with the reason; an admin
// lands on the overview with an HttpOnly session cookie the page cannot read; writes through
// the session are audited under the user's name and need the console header; signing out ends
// the session. The console itself makes no request outside the gateway.
//
// node oidc-sign-in.test.mjs ADMIN_URL PROVIDER_URL SCREENSHOT_DIR
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [adminUrl, providerUrl, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
const outside = [];
const pageErrors = [];

async function freshPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.route("**/*", (route) => {
    const request = route.request();
    const url = request.url();
    if (url.startsWith(adminUrl) || url.startsWith(providerUrl)) return route.continue();
    // oidc-provider's development page asks for web fonts; only the console's own requests count.
    const from = request.headers().referer || page.url();
    if (!from.startsWith(providerUrl)) outside.push(url);
    return route.abort();
  });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  return [context, page];
}

// From the console's sign-in form through the provider's page and back.
async function signInAs(page, login) {
  await page.goto(`${adminUrl}/`);
  await page.waitForSelector("#oidc-signin:not([hidden]) a");
  await page.click("#oidc-signin a");
  await page.waitForSelector('input[name="login"]');
  assert.ok(page.url().startsWith(providerUrl), `at the provider: ${page.url()}`);
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await page.click('button[type="submit"]');
  await page.waitForURL((u) => u.href.startsWith(adminUrl));
}

// An admin API call from the page, signed by its cookie (with or without the console header).
function callFromPage(page, path, { method = "GET", body, header = true } = {}) {
  return page.evaluate(async ([path, method, body, header]) => {
    const headers = { ...(header ? { "x-tollgate-console": "1" } : {}), ...(body ? { "content-type": "application/json" } : {}) };
    const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    return [r.status, await r.json().catch(() => null)];
  }, [path, method, body, header]);
}

try {
  // Not an admin: back on the sign-in form, told why, no session.
  {
    const [context, page] = await freshPage();
    await page.goto(`${adminUrl}/`);
    await page.waitForSelector("#oidc-signin:not([hidden]) a");
    await page.screenshot({ path: `${shots}/sign-in.png` });
    await signInAs(page, "dev");
    await page.waitForSelector("#signin-error:not(:empty)");
    assert.match(await page.textContent("#signin-error"), /dev is not in the admin group/);
    assert.equal((await context.cookies()).filter((c) => c.name === "tollgate_console").length, 0);
    await context.close();
  }
  // An admin: the overview, a session cookie out of the page's reach.
  const [context, page] = await freshPage();
  await signInAs(page, "admin");
  await page.waitForSelector('#page-overview[data-ready="true"]');
  const cookie = (await context.cookies()).find((c) => c.name === "tollgate_console");
  assert.ok(cookie, "a session cookie");
  assert.ok(cookie.httpOnly, "HttpOnly");
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie.includes("tollgate_console")), false);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("tollgate-admin-token")), null);
  // A write through the session is the user's, in the audit log.
  const [created] = await callFromPage(page, "/admin/v1/consumers", { method: "POST", body: { name: "from-oidc-session" } });
  assert.equal(created, 201);
  const [, audit] = await callFromPage(page, "/admin/v1/audit");
  assert.equal(audit.data[0].actor, "oidc:admin");
  // The cookie alone (what a cross-site form would send) is not enough.
  const [bare, refused] = await callFromPage(page, "/admin/v1/consumers", { header: false });
  assert.equal(bare, 401, JSON.stringify(refused));
  // The page survives a reload signed in (the session, not a stored token).
  await page.reload();
  await page.waitForSelector('#page-overview[data-ready="true"]');
  // Signing out ends the session on the gateway.
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])");
  const [after] = await callFromPage(page, "/admin/v1/consumers");
  assert.equal(after, 401);
  await context.close();

  assert.deepEqual(outside, [], "requests outside the gateway and the provider");
  assert.deepEqual(pageErrors, [], "page errors");
  console.log("all checks passed");
} finally {
  await browser.close();
}
