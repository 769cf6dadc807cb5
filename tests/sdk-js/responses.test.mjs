// The npm openai package's Responses and embeddings clients against a running Bursar gateway backed by the Simulator.
// test.sh starts the gateway and sets BURSAR_URL and BURSAR_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const url = process.env.BURSAR_URL;
const key = process.env.BURSAR_KEY;
if (!url || !key) throw new Error('BURSAR_URL and BURSAR_KEY must be set (test.sh starts the gateway).');

const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-bursar-feature': 'js-responses' } });

test('responses: plain create with output_text and usage', async () => {
  const r = await openai.responses.create({ model: 'gpt-4o-mini', input: 'Hello from node', instructions: 'Be brief.' });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.ok(r.output_text.length > 0);
  assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
});

test('responses: streamed events end with response.completed carrying usage', async () => {
  const stream = await openai.responses.create({ model: 'gpt-4.1', input: 'Stream please', stream: true });
  let text = ''; let completed = null; const types = [];
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.ok(text.length > 0);
  assert.ok(completed && completed.usage.output_tokens > 0);
});

test('responses: a function tool call and its output, chained with previous_response_id', async () => {
  const tools = [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }, strict: false }];
  const first = await openai.responses.create({ model: 'gpt-4o', input: 'Weather in Paris?', tools });
  const call = first.output.find((o) => o.type === 'function_call');
  assert.ok(call, 'a function_call item');
  assert.equal(call.name, 'get_weather');
  assert.equal(JSON.parse(call.arguments).city, 'Paris');
  const second = await openai.responses.create({
    model: 'gpt-4o', tools, previous_response_id: first.id,
    input: [{ type: 'function_call_output', call_id: call.call_id, output: '18C and sunny' }],
  });
  assert.match(second.output_text, /18C and sunny/);
});

test('responses: a chain re-bills the stored context as input, and the stored response can be read and deleted', async () => {
  const first = await openai.responses.create({ model: 'gpt-4o', input: Array.from({ length: 400 }, (_, i) => `policy clause ${i} applies`).join(' ') });
  const second = await openai.responses.create({ model: 'gpt-4o', input: 'Summarize the clauses above.', previous_response_id: first.id });
  assert.ok(second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens);
  assert.ok(second.usage.input_tokens_details.cached_tokens >= 1024);
  const got = await openai.responses.retrieve(first.id);
  assert.equal(got.id, first.id);
  const items = await openai.responses.inputItems.list(first.id);
  assert.equal(items.data.length, 1);
  await openai.responses.delete(first.id);
  await assert.rejects(openai.responses.retrieve(first.id), (e) => e.status === 404);
});

test('responses: a malformed body is a 400 naming the field', async () => {
  await assert.rejects(openai.responses.create({ model: 'gpt-4o', input: 42 }), (e) => e.status === 400 && e.param === 'input');
});

test('embeddings: create returns vectors (base64 decoded by the SDK) and usage', async () => {
  const r = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['How do I reset my password?', 'What are your hours?'] });
  assert.equal(r.data.length, 2);
  assert.ok(r.data[0].embedding.length > 0);
  assert.ok(Number.isFinite(r.data[0].embedding[0]));
  assert.ok(r.usage.prompt_tokens > 0);
  const floats = await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'What are your hours?', encoding_format: 'float' });
  assert.deepEqual(Array.from(floats.data[0].embedding).map((f) => f.toFixed(5)), Array.from(r.data[1].embedding).map((f) => f.toFixed(5)));
});
