// A picture of the playground for the docs: one seeded generation on the server at
// SEQBOAT_HTTP_BASE (scripts/playground_screenshot.sh serves the demo model), saved to
// SEQBOAT_SCREENSHOT. Checks nothing; playground_test.mjs is the test.
import { chromium } from 'playwright-core';

const base = process.env.SEQBOAT_HTTP_BASE;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1480, height: 900 } });
  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.playground && window.playground.layers > 0);
  await page.fill('#prompt', process.env.SEQBOAT_PROMPT || 'The computer');
  await page.fill('#max-tokens', '300');
  await page.fill('#seed', '3');
  for (const bias of ['2', '0']) {  // two runs in the table; the picture shows the last
    await page.fill('#bias', bias);
    await page.click('#generate');
    await page.waitForSelector('#output[data-state="done"]', { timeout: 120000 });
  }
  await page.locator('#output .tok').nth(40).hover();
  await page.screenshot({ path: process.env.SEQBOAT_SCREENSHOT });
} finally {
  await browser.close();
}
