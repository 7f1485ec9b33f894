// The playground page in Debian's chromium (headless, through playwright-core): it loads from
// the server alone, streams seeded generations at several activation biases, and shows for
// every token the activations gRPC reported for the same request (SEQBOAT_EXPECTED, written by
// test_playground.py); the page's rates move with the bias. Saves SEQBOAT_SCREENSHOT.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.SEQBOAT_HTTP_BASE;
const expected = JSON.parse(readFileSync(process.env.SEQBOAT_EXPECTED, 'utf8'));
const screenshot = process.env.SEQBOAT_SCREENSHOT;
const LEVELS = 8;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],  // CI runs as root
});
try {
  const page = await browser.newPage({ viewport: { width: 1480, height: 940 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('request', (r) => {
    if (!r.url().startsWith(`${base}/`)) problems.push(`the page fetched ${r.url()}`);
  });

  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.playground && window.playground.layers > 0);
  const layers = expected.layers;
  assert.equal(await page.evaluate(() => window.playground.layers), layers);
  const info = await page.locator('#model-info').innerText();
  assert.match(info, new RegExp(`layers L\\s+${layers}`), info);
  assert.match(info, /backend\s+cpu/, info);
  assert.match(await page.locator('#server-status').innerText(), /serving/);

  await page.fill('#prompt', expected.prompt);
  await page.fill('#max-tokens', String(expected.max_tokens));
  await page.fill('#temperature', String(expected.temperature));
  await page.fill('#seed', String(expected.seed));

  const shownRates = [];
  for (const run of expected.runs) {
    await page.fill('#bias', String(run.bias));
    assert.equal(await page.locator('#bias-value').innerText(), String(run.bias));
    await page.click('#generate');
    await page.waitForSelector('#output[data-state="done"]', { timeout: 60000 });
    const got = await page.evaluate(() => ({
      tokens: window.playground.tokens.map((t) => t.layers),
      shown: [...document.querySelectorAll('#output .tok')].map((el) => ({
        index: Number(el.dataset.index),
        shade: el.querySelector('.ch').className,
        strip: [...el.querySelectorAll('.strip i')].map((i) => (i.classList.contains('on') ? 1 : 0)),
        text: el.querySelector('.ch').textContent,
      })),
      rate: document.querySelector('#rate').textContent,
      layerRates: [...document.querySelectorAll('#layer-rates .lr')].map((r) => Number(r.dataset.rate)),
      tokensShown: document.querySelector('#tokens').textContent,
      error: document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent,
    }));
    const label = `bias ${run.bias}`;
    assert.equal(got.error, '', label);
    assert.deepEqual(got.tokens, run.layers, `${label}: the page's activations are gRPC's`);
    assert.equal(got.tokensShown, String(run.layers.length), label);
    // Every character: shaded by its token's count of layers that ran, its strip those layers.
    for (const el of got.shown) {
      const want = run.layers[el.index];
      const count = want.reduce((a, b) => a + b, 0);
      assert.equal(el.shade, `ch lv${Math.round((count / layers) * LEVELS)}`, `${label} token ${el.index}`);
      assert.deepEqual(el.strip, want, `${label} token ${el.index}`);
    }
    assert.equal(got.shown.map((el) => el.text).join(''), run.text.replace(/\n/g, '↵').replace(/\t/g, '⇥'), label);
    assert.equal(got.rate, `${(100 * run.rate).toFixed(1)}%`, label);
    run.layer_rates.forEach((rate, l) => assert.ok(Math.abs(got.layerRates[l] - rate) < 1e-9, `${label} L${l}`));
    shownRates.push(parseFloat(got.rate));
    console.log(`${label}: ${got.tokens.length} tokens, attention ran ${got.rate}, as over gRPC`);
  }
  // The runs table keeps each run, newest first.
  const rows = await page.locator('#runs tbody tr').count();
  assert.equal(rows, expected.runs.length);

  // A bad bias is the server's 400, shown; the page goes on.
  const before = problems.length;
  await page.fill('#bias', '1e9');
  await page.click('#generate');
  await page.waitForSelector('#output[data-state="done"]');
  const error = await page.locator('#error').innerText();
  assert.match(error, /routing\.activation_bias/, error);
  await page.fill('#bias', '0');
  await page.fill('#layer-bias', '1, 2');  // the model has more layers
  await page.click('#generate');
  await page.waitForSelector('#output[data-state="done"]');
  const listError = await page.locator('#error').innerText();
  assert.match(listError, /routing\.layer_activation_bias/, listError);
  await page.fill('#layer-bias', '');
  const refused = 'console error: Failed to load resource: the server responded with a status of 400 (Bad Request)';
  assert.deepEqual(problems.splice(before), [refused, refused]);

  // Back to the first run for the picture, hovering one character.
  await page.fill('#bias', String(expected.runs[0].bias));
  await page.click('#generate');
  await page.waitForSelector('#output[data-state="done"]');
  await page.locator('#output .tok').nth(5).hover();
  assert.match(await page.locator('#token-info').innerText(), /attention ran in \d of \d layers/);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  // Stop ends a long generation on a slow server: the browser hangs up, the server cancels.
  const slow = await browser.newPage();
  slow.on('pageerror', (e) => problems.push(`page error (slow server): ${e.message}`));
  await slow.goto(`${process.env.SEQBOAT_HTTP_BASE_SLOW}/`);
  await slow.waitForFunction(() => window.playground && window.playground.layers > 0);
  await slow.fill('#max-tokens', '200');
  await slow.click('#generate');
  await slow.waitForFunction(() => window.playground.tokens.length >= 5, null, { timeout: 30000 });
  await slow.click('#stop');
  await slow.waitForSelector('#output[data-state="done"]');
  const stoppedAt = await slow.evaluate(() => window.playground.tokens.length);
  assert.ok(stoppedAt < 200, `stopped after ${stoppedAt} tokens`);
  assert.equal(await slow.locator('#error').isHidden(), true);
  assert.equal(await slow.locator('#generate').isEnabled(), true);
  console.log(`stop: the generation ended after ${stoppedAt} of 200 tokens`);
  assert.deepEqual(problems, []);
  console.log(`rates shown: ${shownRates.join(', ')}; screenshot ${screenshot || '(none)'}`);
} finally {
  await browser.close();
}
