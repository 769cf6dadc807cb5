using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>A few thousand mutated requests: no 500, no crash, every error in the dialect's shape.</summary>
[Collection(GatewayCollection.Name)]
public sealed class FuzzTests(GatewayFixture gw)
{
    private static readonly string[] Seeds =
    [
        """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":20,"stream":false}""",
        """{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}""",
        """{"model":"claude-haiku-4-5","max_tokens":20,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}""",
        """{"model":"claude-haiku-4-5","max_tokens":20,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"x"}]},{"role":"assistant","content":"y"},{"role":"user","content":"z"}]}""",
    ];

    private static readonly string[] Junk = ["null", "true", "-1", "1e309", "\"\"", "[]", "{}", "\"\\u0000\"", "99999999999999999999", "[[[[[[[[]]]]]]]]", "\"claude-haiku-4-5\"", "{\"type\":\"ephemeral\"}"];

    private static string Mutate(string seed, Random rng)
    {
        switch (rng.Next(6))
        {
            case 0: // flip bytes
                var b = Encoding.UTF8.GetBytes(seed);
                for (var i = 0; i < 1 + rng.Next(4); i++) b[rng.Next(b.Length)] = (byte)rng.Next(32, 127);
                return Encoding.UTF8.GetString(b);
            case 1: // truncate
                return seed[..rng.Next(seed.Length)];
            case 2: // replace a value anywhere in the tree with junk
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
                var junk = JsonNode.Parse(Junk[rng.Next(Junk.Length)]);
                if (parent is JsonObject po) po[(string)key] = junk; else ((JsonArray)parent)[(int)key] = junk;
                return node.ToJsonString();
            }
            case 3: // delete a field
            {
                var node = (JsonObject)JsonNode.Parse(seed)!;
                var keys = node.Select(p => p.Key).ToArray();
                node.Remove(keys[rng.Next(keys.Length)]);
                return node.ToJsonString();
            }
            case 4: // deep nesting
                return "{\"model\":\"gpt-4o-mini\",\"messages\":" + new string('[', 2000) + new string(']', 2000) + "}";
            default: // duplicate keys and odd unicode
                return seed.Replace("\"messages\"", "\"model\":\"\\ud800\",\"messages\"");
        }
    }

    [Fact]
    public async Task Mutated_requests_never_produce_a_500_or_a_crash()
    {
        var rng = new Random(20261123);
        var statuses = new Dictionary<int, int>();
        for (var i = 0; i < 2500; i++)
        {
            var seed = Seeds[rng.Next(Seeds.Length)];
            var path = seed.Contains("claude") ^ (rng.Next(10) == 0) ? "/v1/messages" : "/v1/chat/completions";
            var body = Mutate(seed, rng);
            using var req = gw.Post(path, body, feature: "fuzz");
            using var resp = await gw.Http.SendAsync(req);
            var text = await resp.Content.ReadAsStringAsync();
            var code = (int)resp.StatusCode;
            statuses[code] = statuses.GetValueOrDefault(code) + 1;
            Assert.True(code < 500, $"HTTP {code} for {path} {body[..Math.Min(300, body.Length)]}\n{text}");
            if (code >= 400)
            {
                var err = JsonNode.Parse(text)!;
                if (path == "/v1/messages") Assert.Equal("error", err["type"]!.GetValue<string>());
                Assert.False(string.IsNullOrWhiteSpace(err["error"]!["message"]!.GetValue<string>()));
            }
        }
        Assert.True(statuses.GetValueOrDefault(200) > 0 && statuses.GetValueOrDefault(400) > 0, string.Join(", ", statuses));
        Assert.Equal(HttpStatusCode.OK, (await gw.Http.GetAsync("/health/live")).StatusCode);
    }
}
