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

    /// <summary>The hostile corpus of issue 11, over both dialects and count_tokens: (path, body bytes, extra header).</summary>
    internal static IEnumerable<(string Path, byte[] Body, (string Name, string Value)? Header)> HostileCorpus()
    {
        static byte[] U(string s) => Encoding.UTF8.GetBytes(s);
        string[] paths = ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"];
        foreach (var path in paths)
        {
            var model = path == "/v1/chat/completions" ? "gpt-4o-mini" : "claude-haiku-4-5";
            string Body(string content, string extra = "") => $$"""{"model":"{{model}}","max_tokens":5{{extra}},"messages":[{"role":"user","content":{{content}}}]}""";
            // long runs without spaces (quadratic BPE before issue 11)
            foreach (var c in new[] { 'A', 'z', '7', ' ', '.', '\u4e2d' }) yield return (path, U(Body("\"" + new string(c, 100_000) + "\"")), null);
            yield return (path, U(Body("\"x\"", ",\"system\":\"" + new string('A', 100_000) + "\"")), null);
            // duplicate keys, top level and nested
            yield return (path, U($$"""{"model":"{{model}}","model":"{{model}}","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"""), null);
            yield return (path, U(Body("\"hi\"", ",\"max_tokens\":6")), null);
            yield return (path, U($$"""{"model":"{{model}}","max_tokens":5,"messages":[{"role":"user","role":"user","content":"hi"}]}"""), null);
            yield return (path, U($$"""{"model":"{{model}}","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","type":"image","text":"hi"}]}]}"""), null);
            // control characters in tag headers
            foreach (var h in new[] { "x-bursar-team", "x-bursar-feature", "x-bursar-customer", "x-bursar-run" })
                yield return (path, U(Body("\"hi\"")), (h, "\u001b[2J\u001b[31mPWNED"));
            yield return (path, U(Body("\"hi\"")), ("x-bursar-task", "a\u007fb"));
            // deep nesting
            foreach (var depth in new[] { 60, 127, 129, 2_000, 100_000 })
                yield return (path, U($$"""{"model":"{{model}}","max_tokens":5,"messages":[{"role":"user","content":{{new string('[', depth)}}{{new string(']', depth)}}}]}"""), null);
            yield return (path, U($$"""{"model":"{{model}}","max_tokens":5,"metadata":{{string.Concat(Enumerable.Repeat("{\"a\":", 200))}}1{{new string('}', 200)}},"messages":[{"role":"user","content":"hi"}]}"""), null);
            // invalid UTF-8
            var bad = U(Body("\"hi\""));
            var at = Array.IndexOf(bad, (byte)'h');
            foreach (var b in new byte[][] { [0xFF], [0xC3], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80] })
                yield return (path, [.. bad[..at], .. b, .. bad[at..]], null);
            // lone surrogates, escaped and in the model name
            yield return (path, U(Body("\"\\ud800\"")), null);
            yield return (path, U(Body("\"a\\udc00b\\ud800\"")), null);
            yield return (path, U($$"""{"model":"\ud800","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"""), null);
            // huge numbers
            foreach (var num in new[] { "1e309", "-1e309", "99999999999999999999999999", "1" + new string('0', 10_000), "0.0000000000000000000000000001" })
            {
                yield return (path, U($$"""{"model":"{{model}}","max_tokens":{{num}},"messages":[{"role":"user","content":"hi"}]}"""), null);
                yield return (path, U(Body("\"hi\"", $",\"temperature\":{num},\"top_k\":{num}")), null);
                yield return (path, U(Body(num)), null);
            }
            // huge strings elsewhere
            yield return (path, U($$"""{"model":"{{new string('m', 300)}}","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"""), null);
            yield return (path, U($$"""{"{{new string('k', 100_000)}}":1,"model":"{{model}}","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"""), null);
        }
    }

    /// <summary>Every answer to hostile input is a dialect-shaped 4xx naming the fault, or a 200; never a 5xx or an empty body.</summary>
    internal static void AssertShaped(string path, int code, string text, string what)
    {
        Assert.True(code < 500, $"HTTP {code} for {what}\n{text[..Math.Min(500, text.Length)]}");
        if (code >= 400)
        {
            Assert.False(string.IsNullOrWhiteSpace(text), $"empty {code} for {what}");
            var err = JsonNode.Parse(text)!;
            if (path.StartsWith("/v1/messages", StringComparison.Ordinal)) Assert.Equal("error", err["type"]!.GetValue<string>());
            Assert.False(string.IsNullOrWhiteSpace(err["error"]!["message"]!.GetValue<string>()), $"no message for {what}");
        }
        else Assert.Equal(200, code);
    }

    [Fact]
    public async Task The_hostile_corpus_gets_shaped_4xx_answers_and_never_a_5xx()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var statuses = new Dictionary<int, int>();
        foreach (var (path, body, header) in HostileCorpus())
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(body) };
            req.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            req.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", gw.Key);
            req.Headers.Add("anthropic-version", "2023-06-01");
            if (header is { } h) req.Headers.TryAddWithoutValidation(h.Name, h.Value);
            using var resp = await gw.Http.SendAsync(req);
            var text = await resp.Content.ReadAsStringAsync();
            var code = (int)resp.StatusCode;
            statuses[code] = statuses.GetValueOrDefault(code) + 1;
            AssertShaped(path, code, text, $"{path} {header} {Encoding.UTF8.GetString(body[..Math.Min(200, body.Length)])}");
            // tags are read (and stored) on the call paths; count_tokens neither meters nor stores them
            if (header is not null && !path.EndsWith("count_tokens", StringComparison.Ordinal)) Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
        }
        // malformed chunked framing, over a raw socket
        foreach (var path in new[] { "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens" })
        {
            foreach (var chunked in new[] { "ZZZ\r\n", "5\r\n{\"mo\r\nGG\r\n", "-1\r\n", "FFFFFFFFFFFFFFFFFFFF\r\n" })
            {
                var uri = new Uri(gw.BaseUrl);
                var (code, text) = await HostileInputTests.RawAsync(gw.BaseUrl, $"POST {path} HTTP/1.1\r\nHost: {uri.Authority}\r\nAuthorization: Bearer {gw.Key}\r\n" +
                    $"anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}");
                statuses[code] = statuses.GetValueOrDefault(code) + 1;
                AssertShaped(path, code, text, $"{path} chunked {chunked}");
                Assert.Equal(400, code);
            }
        }
        Assert.True(statuses.GetValueOrDefault(200) > 0 && statuses.GetValueOrDefault(400) > 0, string.Join(", ", statuses));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"the hostile corpus took {sw.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(HttpStatusCode.OK, (await gw.Http.GetAsync("/health/live")).StatusCode);
    }
}
