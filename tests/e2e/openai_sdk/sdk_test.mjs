// seqboat-server's OpenAI-compatible HTTP API through the official `openai` Node SDK (v6).
// Run by tests/e2e/test_openai_sdk.py, which starts the servers and sets:
//   SEQBOAT_HTTP_BASE        http://127.0.0.1:PORT/v1 of a server with --api_keys_file
//   SEQBOAT_API_KEY          a key in that file
//   SEQBOAT_HTTP_BASE_SMALL  http://127.0.0.1:PORT/v1 of a server with room for one stream
//                            (--max_batch 1 --max_waiting 0, slow steps), no keys
// Every check runs (a failure does not stop the others); the exit code is 1 if any failed.
// Nothing here knows what the model generates: streamed output is compared with whole
// output, and counts, shapes and types with the request.
import assert from 'node:assert/strict';
import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  NotFoundError,
  RateLimitError,
} from 'openai';

const BASE = process.env.SEQBOAT_HTTP_BASE;
const API_KEY = process.env.SEQBOAT_API_KEY;
const BASE_SMALL = process.env.SEQBOAT_HTTP_BASE_SMALL;
if (!BASE || !API_KEY || !BASE_SMALL) {
  console.error('set SEQBOAT_HTTP_BASE, SEQBOAT_API_KEY and SEQBOAT_HTTP_BASE_SMALL');
  process.exit(2);
}

// No retries: the SDK would otherwise retry 429s, 5xx and dropped connections, hiding them.
const options = { maxRetries: 0, timeout: 60_000 };
const client = new OpenAI({ baseURL: BASE, apiKey: API_KEY, ...options });
const wrongKey = new OpenAI({ baseURL: BASE, apiKey: 'not-a-key-of-this-server', ...options });
const small = new OpenAI({ baseURL: BASE_SMALL, apiKey: 'unused', ...options });

let failures = 0;
async function check(name, fn) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name} (${Date.now() - started} ms)`);
    console.log(String(err?.stack ?? err).replace(/^/gm, '     '));
    if (err instanceof APIError) {
      console.log(`     status ${err.status}, error ${JSON.stringify(err.error)}`);
    }
    for (let cause = err?.cause; cause; cause = cause.cause) {
      console.log(`     cause: ${cause?.code ? `[${cause.code}] ` : ''}${cause?.message ?? cause}`);
    }
  }
}

// The error a promise rejects with (fails if it resolves).
async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the request to fail');
}

function assertLogprobNumber(value, what) {
  assert.equal(typeof value, 'number', `${what}: a number`);
  assert.ok(Number.isFinite(value) && value <= 1e-4, `${what}: ${value} is a log probability`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let model;
await check('models.list: one model', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.equal(models.length, 1, JSON.stringify(models));
  assert.equal(typeof models[0].id, 'string');
  assert.ok(models[0].id.length > 0);
  assert.equal(models[0].object, 'model');
  model = models[0].id;
});
model ??= 'model';

await check('models.list needs no API key', async () => {
  const page = await wrongKey.models.list();
  assert.deepEqual(page.data.map((m) => m.id), [model]);
});

await check('models.retrieve: the model, and a NotFoundError for another', async () => {
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  const err = await rejection(client.models.retrieve('not-this-model'));
  assert.ok(err instanceof NotFoundError, `expected a NotFoundError, got ${err?.constructor?.name}`);
  assert.equal(err.status, 404);
});

await check('completions: whole, greedy, max_tokens 16', async () => {
  const r = await client.completions.create({
    model, prompt: 'The boat ', max_tokens: 16, temperature: 0, ignore_eos: true,
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.choices[0].text.length > 0, 'non-empty text');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 16);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await check('completions: greedy stream equals the whole response', async () => {
  const request = { model, prompt: 'The boat ', max_tokens: 16, temperature: 0, ignore_eos: true };
  const whole = await client.completions.create(request);
  const stream = await client.completions.create({ ...request, stream: true });
  let text = '';
  const finishes = [];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      assert.equal(c.index, 0);
      text += c.text;
      if (c.finish_reason) finishes.push(c.finish_reason);
    }
  }
  assert.equal(text, whole.choices[0].text);
  assert.deepEqual(finishes, ['length']);
});

await check('completions: stream, n=3, logprobs 2, seed, include_usage', async () => {
  const maxTokens = 8;
  const request = {
    model, prompt: 'The boat ', n: 3, max_tokens: maxTokens, logprobs: 2, seed: 7, temperature: 1.0,
    ignore_eos: true,
  };
  const stream = await client.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, 'one id for the whole stream');
  const texts = ['', '', ''];
  const finishes = [[], [], []];
  const tokens = [0, 0, 0];
  const last = chunks[chunks.length - 1];
  for (const chunk of chunks.slice(0, -1)) {
    assert.equal(chunk.object, 'text_completion');
    assert.equal(chunk.choices.length, 1, JSON.stringify(chunk));
    assert.ok(chunk.usage == null, 'usage only in the last chunk');
    const c = chunk.choices[0];
    assert.ok([0, 1, 2].includes(c.index), `index ${c.index}`);
    assert.equal(finishes[c.index].length, 0, `index ${c.index}: a chunk after its finish_reason`);
    assert.equal(typeof c.text, 'string');
    texts[c.index] += c.text;
    if (c.finish_reason) finishes[c.index].push(c.finish_reason);
    if (c.logprobs) {
      const { tokens: toks, token_logprobs: lps, top_logprobs: tops } = c.logprobs;
      assert.ok(Array.isArray(toks) && Array.isArray(lps) && Array.isArray(tops), JSON.stringify(c.logprobs));
      assert.equal(lps.length, toks.length);
      assert.equal(tops.length, toks.length);
      for (let i = 0; i < toks.length; ++i) {
        assert.equal(typeof toks[i], 'string');
        assertLogprobNumber(lps[i], 'token_logprobs');
        const alternatives = Object.entries(tops[i]);
        assert.equal(alternatives.length, 2, JSON.stringify(tops[i]));
        for (const [token, lp] of alternatives) {
          assert.equal(typeof token, 'string');
          assertLogprobNumber(lp, 'top_logprobs');
        }
      }
      tokens[c.index] += toks.length;
    }
  }
  for (let i = 0; i < 3; ++i) {
    assert.ok(texts[i].length > 0, `index ${i}: text`);
    assert.deepEqual(finishes[i], ['length'], `index ${i}: one finish_reason`);
    assert.equal(tokens[i], maxTokens, `index ${i}: a logprob entry per token`);
  }
  assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
  assert.ok(last.usage, 'the last chunk carries usage');
  assert.equal(last.usage.completion_tokens, 3 * maxTokens);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);

  // The same request, whole, with the same seed: the same three completions.
  const whole = await client.completions.create(request);
  assert.equal(whole.choices.length, 3);
  const byIndex = [...whole.choices].sort((a, b) => a.index - b.index);
  assert.deepEqual(byIndex.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(byIndex.map((c) => c.text), texts, 'seeded stream and whole response agree');
  for (const c of byIndex) {
    assert.equal(c.finish_reason, 'length');
    assert.equal(c.logprobs.tokens.length, maxTokens);
  }
  assert.equal(whole.usage.completion_tokens, 3 * maxTokens);
});

const chatRequest = {
  model, messages: [{ role: 'user', content: 'Hello' }], temperature: 0, max_tokens: 12,
  ignore_eos: true, logprobs: true, top_logprobs: 2,
};

function checkChatLogprobs(entries, what) {
  assert.ok(Array.isArray(entries), `${what}: logprobs.content is an array`);
  for (const e of entries) {
    assert.equal(typeof e.token, 'string', what);
    assertLogprobNumber(e.logprob, `${what} logprob`);
    assert.ok(Array.isArray(e.top_logprobs) && e.top_logprobs.length === 2, JSON.stringify(e));
    for (const t of e.top_logprobs) {
      assert.equal(typeof t.token, 'string');
      assertLogprobNumber(t.logprob, `${what} top_logprobs`);
    }
  }
}

let chatWhole;
await check('chat: whole, greedy, logprobs, top_logprobs 2', async () => {
  const r = await client.chat.completions.create(chatRequest);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(c.message.content.length > 0, 'non-empty content');
  assert.equal(c.finish_reason, 'length');
  checkChatLogprobs(c.logprobs.content, 'chat');
  assert.equal(c.logprobs.content.length, 12, 'a logprob entry per token');
  assert.equal(r.usage.completion_tokens, 12);
  chatWhole = c.message.content;
});

await check('chat: stream equals the whole response', async () => {
  const stream = await client.chat.completions.create({ ...chatRequest, stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'the first delta has the role');
  let content = '';
  let entries = 0;
  const finishes = [];
  for (const chunk of chunks) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.choices.length, 1);
    const c = chunk.choices[0];
    assert.equal(c.index, 0);
    if (typeof c.delta.content === 'string') content += c.delta.content;
    if (c.logprobs?.content) {
      checkChatLogprobs(c.logprobs.content, 'chat stream');
      entries += c.logprobs.content.length;
    }
    if (c.finish_reason) finishes.push(c.finish_reason);
  }
  assert.deepEqual(finishes, ['length'], 'one finish_reason');
  assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'length', 'in the final chunk');
  assert.equal(entries, 12, 'a logprob entry per token');
  // The whole response of the previous check, or (if that one failed) a new one.
  const whole = chatWhole ?? (await client.chat.completions.create(chatRequest)).choices[0].message.content;
  assert.equal(content, whole, 'concatenated deltas equal the whole content');
});

await check('400: temperature -1 is a BadRequestError', async () => {
  const err = await rejection(client.completions.create({ model, prompt: 'The boat ', temperature: -1 }));
  assert.ok(err instanceof BadRequestError, `${err?.constructor?.name}: ${err}`);
  assert.ok(err instanceof OpenAI.BadRequestError);
  assert.equal(err.status, 400);
  assert.equal(err.param, 'temperature');
  assert.equal(err.type, 'invalid_request_error');
  assert.equal(typeof err.error?.message, 'string');
});

await check('routing (a SeqBoat extra): a bias of 0 is no bias; a bad list is a BadRequestError', async () => {
  const request = { model, prompt: 'The boat ', max_tokens: 16, temperature: 0, ignore_eos: true };
  const plain = await client.completions.create(request);
  const zero = await client.completions.create({ ...request, routing: { activation_bias: 0 } });
  assert.equal(zero.choices[0].text, plain.choices[0].text);
  const biased = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0,
    routing: { activation_bias: 2.5 },
  });
  assert.equal(biased.choices.length, 1);
  const err = await rejection(client.completions.create({
    ...request, routing: { layer_activation_bias: [1] },
  }));
  assert.ok(err instanceof BadRequestError, `${err?.constructor?.name}: ${err}`);
  assert.equal(err.status, 400);
  assert.equal(err.param, 'routing.layer_activation_bias');
});

await check('400: chat top_logprobs without logprobs is a BadRequestError', async () => {
  const err = await rejection(client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2, top_logprobs: 2,
  }));
  assert.ok(err instanceof BadRequestError, `${err?.constructor?.name}: ${err}`);
  assert.equal(err.status, 400);
  assert.equal(err.param, 'top_logprobs');
});

await check('401: a wrong API key is an AuthenticationError', async () => {
  for (const create of [
    () => wrongKey.completions.create({ model, prompt: 'The boat ', max_tokens: 2 }),
    () => wrongKey.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }),
    () => wrongKey.completions.create({ model, prompt: 'The boat ', max_tokens: 2, stream: true }),
  ]) {
    const err = await rejection(create());
    assert.ok(err instanceof AuthenticationError, `${err?.constructor?.name}: ${err}`);
    assert.ok(err instanceof OpenAI.AuthenticationError);
    assert.equal(err.status, 401);
    assert.equal(err.type, 'authentication_error');
  }
});

// Server B has room for one stream: while one is open, another request is refused (429);
// aborting the open one frees its slot well before it would have finished on its own.
await check('429 while the only slot is taken, then abort mid-stream frees it', async () => {
  const maxTokens = 400;  // at --debug_step_delay_ms 50: ~20 s, far past the wait below
  const stream = await small.completions.create({
    model, prompt: 'The boat ', max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true,
  });
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.done, false, 'a first chunk');
  assert.equal(first.value.choices[0].index, 0);
  assert.equal(first.value.choices[0].finish_reason, null);

  for (const create of [
    () => small.completions.create({ model, prompt: 'The boat ', max_tokens: 2 }),
    () => small.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2, stream: true }),
  ]) {
    const err = await rejection(create());
    assert.ok(err instanceof RateLimitError, `${err?.constructor?.name}: ${err}`);
    assert.ok(err instanceof OpenAI.RateLimitError);
    assert.equal(err.status, 429);
    assert.equal(err.type, 'rate_limit_error');
    assert.equal(err.headers.get('retry-after'), '1');
  }
  // The stream is still open and still produces.
  const second = await it.next();
  assert.equal(second.done, false, 'the open stream goes on');
  assert.equal(second.value.choices[0].finish_reason, null);

  stream.controller.abort();
  const afterAbort = await it.next();
  assert.equal(afterAbort.done, true, 'an aborted stream ends without throwing');

  const aborted = Date.now();
  let lastError;
  for (;;) {
    try {
      const s = await small.completions.create({
        model, prompt: 'The boat ', max_tokens: 2, temperature: 0, ignore_eos: true, stream: true,
      });
      let text = '';
      const finishes = [];
      for await (const chunk of s) {
        for (const c of chunk.choices) {
          text += c.text;
          if (c.finish_reason) finishes.push(c.finish_reason);
        }
      }
      assert.deepEqual(finishes, ['length']);
      assert.ok(text.length > 0);
      break;
    } catch (err) {
      if (!(err instanceof RateLimitError)) throw err;
      lastError = err;
    }
    assert.ok(Date.now() - aborted < 3000, `the slot is still taken 3 s after the abort: ${lastError}`);
    await sleep(100);
  }
  console.log(`     the slot was free ${Date.now() - aborted} ms after the abort`);
});

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all checks passed');
