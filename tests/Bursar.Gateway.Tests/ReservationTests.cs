using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Core.Admission;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>A budget reservation is a true worst case: what a call settles at never exceeds what was reserved for it.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ReservationTests(GatewayFixture gw)
{
    private async Task<string> KeyWithBudgetAsync(decimal limit)
    {
        var customer = "res-" + Guid.NewGuid().ToString("N")[..8];
        var key = await gw.CreateKeyAsync(team: null, customer: customer);
        var (status, body) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/" + customer, new { scope = "customer", value = customer, period = "total", limit_usd = limit });
        Assert.True(status == HttpStatusCode.OK, $"{status} {body}");
        return key;
    }

    [Fact]
    public async Task N_completions_reserve_the_output_limit_once_per_completion()
    {
        // before: n was ignored, $0.02 reserved, settled at $2.0000525 against a $1.00 budget
        var key = await KeyWithBudgetAsync(1.00m);
        using var req = gw.Post("/v1/chat/completions", """{"model":"gpt-4o","max_tokens":2000,"n":100,"messages":[{"role":"user","content":"write a long story [[sim:tokens=2000]]"}]}""", key, "res-n");
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.TooManyRequests, resp.StatusCode);
        Assert.Equal("budget_exceeded", JsonNode.Parse(text)!["error"]!["type"]!.GetValue<string>());
        var row = Assert.Single(await gw.LedgerAsync("res-n"));
        Assert.Equal("refused", row.Outcome);
    }

    [Fact]
    public async Task An_invalid_n_is_a_400_naming_the_field()
    {
        using var req = gw.Post("/v1/chat/completions", """{"model":"gpt-4o","n":0,"messages":[{"role":"user","content":"hi"}]}""", feature: "res-bad-n");
        using var resp = await gw.Http.SendAsync(req);
        var e = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
        Assert.Equal("n", e["param"]!.GetValue<string>());
    }

    [Fact]
    public async Task Twenty_concurrent_calls_of_cjk_extension_b_text_settle_within_a_one_dollar_budget()
    {
        // before: the bytes/3 estimate is below the real count for 4-byte characters: 20 calls admitted, settled at $2.286535
        var key = await KeyWithBudgetAsync(1.00m);
        var rng = new Random(7);
        string Text()
        {
            var sb = new StringBuilder(100_000);
            while (Encoding.UTF8.GetByteCount(sb.ToString()) < 100_000 - 8)
                for (var i = 0; i < 1000; i++) sb.Append(char.ConvertFromUtf32(0x20000 + rng.Next(0, 0xA6DF)));
            return sb.ToString();
        }
        var bodies = Enumerable.Range(0, 20).Select(_ => new JsonObject
        {
            ["model"] = "gpt-4o", ["max_tokens"] = 50,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = Text() }),
        }.ToJsonString()).ToArray();
        var statuses = await Task.WhenAll(bodies.Select(async b =>
        {
            using var req = gw.Post("/v1/chat/completions", b, key, "res-cjk");
            using var resp = await gw.Http.SendAsync(req);
            return resp.StatusCode;
        }));
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, s.ToString()));
        var rows = await gw.LedgerAsync("res-cjk", 20);
        var spent = rows.Sum(r => r.Cost ?? 0m);
        Assert.True(spent <= 1.00m, $"settled {spent} against a $1.00 budget ({statuses.Count(s => s == HttpStatusCode.OK)} admitted)");
        Assert.Contains(HttpStatusCode.OK, statuses);
    }

    [Fact]
    public async Task An_openai_call_without_max_tokens_reserves_the_models_maximum_output()
    {
        var price = gw.Services.GetRequiredService<PriceCatalog>().Find("gpt-4o").Price!;
        var maxOutput = price.MaxOutputTokens!.Value;
        // a budget that fits 100 output tokens but not the model's maximum output
        var limit = AdmissionControl.WorstCase(price, 500, maxOutput) / 2;
        var key = await KeyWithBudgetAsync(decimal.Round(limit, 6));
        using (var capped = gw.Post("/v1/chat/completions", """{"model":"gpt-4o","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}""", key, "res-nomax"))
        using (var resp = await gw.Http.SendAsync(capped))
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        using (var open = gw.Post("/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", key, "res-nomax"))
        using (var resp = await gw.Http.SendAsync(open))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, resp.StatusCode);
            Assert.Contains("budget_exceeded", await resp.Content.ReadAsStringAsync());
        }
    }

    /// <summary>Text in many scripts, emoji (with joiners and modifiers), code and escapes: the shapes that break byte/token guesses.</summary>
    private static string RandomPrompt(Random rng)
    {
        string[] pieces =
        [
            "The quarterly report shows revenue up 12% ", "Привет, как дела? Сегодня хорошая погода. ", "مرحبا بالعالم، كيف حالك اليوم؟ ",
            "नमस्ते दुनिया, आप कैसे हैं? ", "สวัสดีครับ วันนี้อากาศดีมาก ", "今日は良い天気ですね。東京タワーに行きましょう。", "你好世界，今天天气很好。",
            "안녕하세요 세계, 오늘 날씨가 좋네요. ", "👨‍👩‍👧‍👦🏳️‍🌈👍🏽🔥💯 ", "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\n",
            "SELECT id, name FROM users WHERE email LIKE '%@example.com';\n", "\"quoted\" \\backslash\\ \t tab\n", "0123456789 3.14159 -42 1e10 ",
            "Ελληνικά κείμενα και ελληνικοί χαρακτήρες ", "עברית היא שפה שמית ", "ᚠᚢᚦᚨᚱᚲ ", "∑∫∂√∞≠≈ ", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ];
        var sb = new StringBuilder();
        var n = rng.Next(1, 40);
        for (var i = 0; i < n; i++)
        {
            if (rng.Next(6) == 0) sb.Append(char.ConvertFromUtf32(0x20000 + rng.Next(0, 0xA6DF)));
            sb.Append(pieces[rng.Next(pieces.Length)]);
        }
        return sb.ToString();
    }

    [Fact]
    public async Task Over_random_prompts_in_every_script_the_actual_cost_never_exceeds_the_reservation()
    {
        var catalog = gw.Services.GetRequiredService<PriceCatalog>();
        var admission = gw.Services.GetRequiredService<AdmissionControl>();
        var rng = new Random(20261201);
        var checkedCalls = 0;
        foreach (var (model, path) in new[] { ("gpt-4o", "/v1/chat/completions"), ("gpt-4.1-mini", "/v1/chat/completions"), ("claude-sonnet-4-5", "/v1/messages"), ("claude-haiku-4-5", "/v1/messages") })
        {
            for (var i = 0; i < 25; i++)
            {
                var maxTokens = rng.Next(1, 300);
                var turns = new JsonArray();
                var count = rng.Next(1, 4) * 2 - 1;
                for (var t = 0; t < count; t++) turns.Add(new JsonObject { ["role"] = t % 2 == 0 ? "user" : "assistant", ["content"] = RandomPrompt(rng) });
                var body = new JsonObject { ["model"] = model, ["max_tokens"] = maxTokens, ["messages"] = turns };
                if (rng.Next(2) == 0) body[path == "/v1/messages" ? "system" : "temperature"] = path == "/v1/messages" ? RandomPrompt(rng) : 0.7;
                var json = body.ToJsonString();
                var feature = $"res-prop-{model}-{i}";
                using var req = gw.Post(path, json, feature: feature);
                using var resp = await gw.Http.SendAsync(req);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
                var row = Assert.Single(await gw.LedgerAsync(feature));
                var scan = RequestScan.Run(Encoding.UTF8.GetBytes(json), path == "/v1/messages" ? Dialect.Anthropic : Dialect.OpenAI);
                var price = catalog.Find(model).Price!;
                var reserved = AdmissionControl.WorstCase(price, admission.InputBound(model, price, scan.InputTokenBound), maxTokens * scan.Choices);
                Assert.True(row.Cost <= reserved, $"{model}: settled {row.Cost} > reserved {reserved} (input {row.InputTokens} tokens, bound {scan.InputTokenBound}; output {row.OutputTokens}/{maxTokens}) for {json[..Math.Min(200, json.Length)]}");
                checkedCalls++;
            }
        }
        Assert.Equal(100, checkedCalls);
    }
}
