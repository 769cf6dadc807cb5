using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Mutated Responses and embeddings bodies, to OpenAI and (translated) to Claude: no 500, no crash, every error OpenAI-shaped.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ResponsesFuzzTests(GatewayFixture gw)
{
    private static readonly (string Path, string Body)[] Seeds =
    [
        ("/v1/responses", """{"model":"gpt-4o-mini","input":"hi","instructions":"be brief","max_output_tokens":32,"stream":false}"""),
        ("/v1/responses", """{"model":"gpt-4o-mini","stream":true,"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":"auto"}"""),
        ("/v1/responses", """{"model":"gpt-5-mini","input":[{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"ok"}],"reasoning":{"effort":"low"},"text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object"}}}}"""),
        ("/v1/responses", """{"model":"claude-haiku-4-5","input":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":[{"type":"input_text","text":"x"}]}],"max_output_tokens":40}"""),
        ("/v1/responses", """{"model":"claude-haiku-4-5","stream":true,"input":"hi","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}],"tool_choice":{"type":"function","name":"f"}}"""),
        ("/v1/embeddings", """{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"float","dimensions":8}"""),
    ];

    private static readonly string[] Junk = ["null", "true", "-1", "1e309", "\"\"", "[]", "{}", "\"\\u0000\"", "99999999999999999999", "[[[[[[[[]]]]]]]]", "\"claude-haiku-4-5\"", "{\"type\":\"function\"}", "[{}]", "\"resp_x\""];

    private static string Mutate(string seed, Random rng)
    {
        switch (rng.Next(5))
        {
            case 0:
                var b = Encoding.UTF8.GetBytes(seed);
                for (var i = 0; i < 1 + rng.Next(4); i++) b[rng.Next(b.Length)] = (byte)rng.Next(32, 127);
                return Encoding.UTF8.GetString(b);
            case 1:
                return seed[..rng.Next(seed.Length)];
            case 4:
                return seed.Replace("\"input\"", rng.Next(2) == 0 ? "\"previous_response_id\":\"resp_nope\",\"input\"" : "\"model\":\"\\ud800\",\"input\"");
            default:
            {
                var node = JsonNode.Parse(seed)!;
                var all = new List<(JsonNode Parent, object Key)>();
                void Walk(JsonNode n)
                {
                    if (n is JsonObject o) foreach (var (k, v) in o.ToArray()) { all.Add((o, k)); if (v is not null) Walk(v); }
                    if (n is JsonArray a) for (var i = 0; i < a.Count; i++) { all.Add((a, i)); if (a[i] is not null) Walk(a[i]!); }
                }
                Walk(node);
                var (parent, key) = all[rng.Next(all.Count)];
                if (rng.Next(3) == 0 && parent is JsonObject del) del.Remove((string)key);
                else
                {
                    var junk = JsonNode.Parse(Junk[rng.Next(Junk.Length)]);
                    if (parent is JsonObject po) po[(string)key] = junk; else ((JsonArray)parent)[(int)key] = junk;
                }
                return node.ToJsonString();
            }
        }
    }

    [Fact]
    public async Task Mutated_responses_and_embeddings_bodies_never_produce_a_500()
    {
        var rng = new Random(20261202);
        var statuses = new Dictionary<int, int>();
        for (var i = 0; i < 1500; i++)
        {
            var (path, seed) = Seeds[rng.Next(Seeds.Length)];
            var body = Mutate(seed, rng);
            using var req = gw.Post(path, body, feature: "rs-fuzz");
            using var resp = await gw.Http.SendAsync(req);
            var text = await resp.Content.ReadAsStringAsync();
            var code = (int)resp.StatusCode;
            statuses[code] = statuses.GetValueOrDefault(code) + 1;
            Assert.True(code < 500, $"HTTP {code} for {path} {body[..Math.Min(400, body.Length)]}\n{text}");
            if (code >= 400) Assert.False(string.IsNullOrWhiteSpace(JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>()));
        }
        Assert.True(statuses.GetValueOrDefault(200) > 0 && statuses.GetValueOrDefault(400) > 0, string.Join(", ", statuses));
        Assert.Equal(HttpStatusCode.OK, (await gw.Http.GetAsync("/health/live")).StatusCode);
    }
}
