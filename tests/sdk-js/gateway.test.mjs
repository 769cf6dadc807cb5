// The official npm SDKs against a running Bursar gateway backed by the Simulator.
// test.sh starts the gateway and sets BURSAR_URL and BURSAR_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const url = process.env.BURSAR_URL;
const key = process.env.BURSAR_KEY;
if (!url || !key) throw new Error('BURSAR_URL and BURSAR_KEY must be set (test.sh starts the gateway).');

const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-bursar-feature': 'js-openai' } });
const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0, defaultHeaders: { 'x-bursar-feature': 'js-anthropic' } });

test('openai: plain completion with usage', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello from node' }] });
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
});

test('openai: streaming with include_usage ends with a usage chunk', async () => {
  const stream = await openai.chat.completions.create({
    model: 'gpt-4.1', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Stream please' }],
  });
  let text = ''; let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(text.length > 0);
  assert.ok(usage && usage.completion_tokens > 0);
});

test('openai: streaming without include_usage never shows the usage chunk', async () => {
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  for await (const chunk of stream) assert.ok(chunk.choices.length > 0, 'a chunk with no choices reached the caller');
});

test('openai: tool call', async () => {
  const r = await openai.chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
  });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(r.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.equal(JSON.parse(r.choices[0].message.tool_calls[0].function.arguments).city, 'Paris');
});

test('openai: a bad request is an APIError with the field named', async () => {
  await assert.rejects(openai.chat.completions.create({ model: 'no-such-model-x', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 404 && /no-such-model-x/.test(e.message));
});

test('anthropic: plain message with usage', async () => {
  const m = await anthropic.messages.create({ model: 'claude-sonnet-4-6', max_tokens: 200, messages: [{ role: 'user', content: 'Hello Claude from node' }] });
  assert.equal(m.type, 'message');
  assert.ok(m.content[0].text.length > 0);
  assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
});

test('anthropic: streaming events and final message', async () => {
  const stream = anthropic.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 200, messages: [{ role: 'user', content: 'Stream to me' }] });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.ok(text.length > 0);
  assert.equal(final.stop_reason, 'end_turn');
  assert.ok(final.usage.output_tokens > 0);
});

test('anthropic: tool use', async () => {
  const m = await anthropic.messages.create({
    model: 'claude-sonnet-4-6', max_tokens: 200,
    tools: [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }],
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
  });
  assert.equal(m.stop_reason, 'tool_use');
  const use = m.content.find((b) => b.type === 'tool_use');
  assert.equal(use.input.city, 'Paris');
});

test('anthropic: a gpt model through the anthropic sdk', async () => {
  const m = await anthropic.messages.create({ model: 'gpt-4o-mini', max_tokens: 100, messages: [{ role: 'user', content: 'Hi GPT' }] });
  assert.ok(m.content[0].text.length > 0);
  assert.ok(m.usage.output_tokens > 0);
});

test('anthropic: count_tokens', async () => {
  const r = await anthropic.messages.countTokens({ model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'How many tokens is this?' }] });
  assert.ok(r.input_tokens > 0);
});

test('anthropic: a bad request is an error of the right type', async () => {
  await assert.rejects(anthropic.messages.create({ model: 'claude-sonnet-4-6', max_tokens: 10, messages: [] }),
    (e) => e.status === 400 && /message/.test(e.message));
});
