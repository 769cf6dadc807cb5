// The batch APIs through Bursar with the official npm SDKs: files.create + batches.create (openai) and
// messages.batches.create (@anthropic-ai/sdk). test.sh starts the gateway and sets BURSAR_URL and BURSAR_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const url = process.env.BURSAR_URL;
const key = process.env.BURSAR_KEY;
if (!url || !key) throw new Error('BURSAR_URL and BURSAR_KEY must be set (test.sh starts the gateway).');

const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-bursar-feature': 'js-batch' } });
const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-bursar-feature': 'js-batch' } });

const line = (id, text) => JSON.stringify({
  custom_id: id, method: 'POST', url: '/v1/chat/completions',
  body: { model: 'gpt-4o-mini', max_completion_tokens: 100, messages: [{ role: 'user', content: text }] },
});

async function until(get, done) {
  for (let i = 0; i < 100; i++) {
    const v = await get();
    if (done(v)) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the batch did not end');
}

test('openai: files.create + batches.create, results through Bursar ids', async () => {
  const file = await openai.files.create({ file: await toFile(Buffer.from(`${line('js-1', 'hello')}\n${line('js-2', 'world')}\n`), 'in.jsonl'), purpose: 'batch' });
  assert.match(file.id, /^file-bsr/);
  assert.equal(file.purpose, 'batch');
  const batch = await openai.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { job: 'js' } });
  assert.match(batch.id, /^batch_bsr/);
  assert.equal(batch.input_file_id, file.id);
  assert.equal(batch.metadata.job, 'js');
  const ended = await until(() => openai.batches.retrieve(batch.id), (b) => b.status === 'completed');
  assert.equal(ended.request_counts.total, 2);
  const content = await (await openai.files.content(ended.output_file_id)).text();
  const ids = content.trim().split('\n').map((l) => JSON.parse(l).custom_id).sort();
  assert.deepEqual(ids, ['js-1', 'js-2']);
  const page = await openai.batches.list({ limit: 5 });
  assert.ok(page.data.some((b) => b.id === batch.id));
});

test('openai: a bad line is an APIError naming the line and field', async () => {
  const bad = JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini' } });
  await assert.rejects(openai.files.create({ file: await toFile(Buffer.from(`${line('ok', 'fine')}\n${bad}\n`), 'bad.jsonl'), purpose: 'batch' }),
    (e) => e.status === 400 && /line 2, field 'body\.messages'/.test(e.message));
});

test('anthropic: messages.batches.create, retrieve, results', async () => {
  const batch = await anthropic.messages.batches.create({
    requests: [
      { custom_id: 'a-1', params: { model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'Hi from node' }] } },
      { custom_id: 'a-2', params: { model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'Again' }] } },
    ],
  });
  assert.match(batch.id, /^msgbatch_bsr/);
  const ended = await until(() => anthropic.messages.batches.retrieve(batch.id), (b) => b.processing_status === 'ended');
  assert.equal(ended.request_counts.succeeded, 2);
  const seen = [];
  for await (const r of await anthropic.messages.batches.results(batch.id)) {
    assert.equal(r.result.type, 'succeeded');
    seen.push(r.custom_id);
  }
  assert.deepEqual(seen.sort(), ['a-1', 'a-2']);
});
