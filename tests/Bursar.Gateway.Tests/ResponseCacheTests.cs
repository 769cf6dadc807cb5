using System.ClientModel;
using System.Net;
using System.Text.Json.Nodes;
using Anthropic;
using Anthropic.Models.Messages;
using OpenAI;
using OpenAI.Chat;

namespace Bursar.Gateway.Tests;

/// <summary>The exact response cache: hits, misses, bypass, tenant isolation, stampede protection, SSE replay through the SDKs.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ResponseCacheTests(GatewayFixture gw)
{
    private static string Chat(string text, double? temperature = 0, bool stream = false)
    {
        var o = new JsonObject { ["model"] = "gpt-4o-mini", ["stream"] = stream, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };
        if (temperature is not null) o["temperature"] = temperature;
        return o.ToJsonString();
    }

    private async Task<(HttpStatusCode Status, string Body, string? Cache)> Send(string json, string feature, string? key = null, string? cacheHeader = null, string path = "/v1/chat/completions")
    {
        using var req = gw.Post(path, json, key, feature);
        if (cacheHeader is not null) req.Headers.Add("x-bursar-cache", cacheHeader);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null);
    }

    [Fact]
    public async Task An_identical_deterministic_request_is_a_hit_that_costs_nothing_and_credits_the_saving()
    {
        var json = Chat("What is the capital of France? " + Guid.NewGuid());
        var first = await Send(json, "cache-hit");
        var second = await Send(json, "cache-hit");
        Assert.Equal(("miss", "hit"), (first.Cache, second.Cache));
        Assert.Equal(first.Body, second.Body);
        var rows = (await gw.LedgerAsync("cache-hit", 2)).OrderBy(r => r.SavingResponseCache).ToArray();
        Assert.True(rows[0].Cost > 0);
        Assert.Equal(0m, rows[1].Cost);
        Assert.Equal(rows[0].Cost, rows[1].SavingResponseCache);
        Assert.Equal(rows[0].Cost, rows[1].CounterfactualCost);
        Assert.Equal("bursar-cache", rows[1].Provider);
    }

    [Fact]
    public async Task Non_deterministic_requests_bypass_unless_the_caller_opts_in()
    {
        var json = Chat("sample me " + Guid.NewGuid(), temperature: 0.7);
        Assert.Equal("bypass", (await Send(json, "cache-bypass")).Cache);
        Assert.Equal("bypass", (await Send(json, "cache-bypass")).Cache);
        Assert.Equal("miss", (await Send(json, "cache-bypass", cacheHeader: "on")).Cache);
        Assert.Equal("hit", (await Send(json, "cache-bypass", cacheHeader: "on")).Cache);
        var det = Chat("deterministic but not wanted " + Guid.NewGuid());
        await Send(det, "cache-bypass");
        Assert.Equal("bypass", (await Send(det, "cache-bypass", cacheHeader: "off")).Cache);
        Assert.Equal("bypass", (await Send(det, "cache-off")).Cache); // a feature whose TTL is zero
    }

    [Fact]
    public async Task Tenants_never_see_each_others_answers_and_any_parameter_change_misses()
    {
        var json = Chat("tenant question " + Guid.NewGuid());
        var acme = await gw.CreateKeyAsync(team: null, customer: "acme-cache");
        var globex = await gw.CreateKeyAsync(team: null, customer: "globex-cache");
        Assert.Equal("miss", (await Send(json, "cache-tenant", acme)).Cache);
        Assert.Equal("hit", (await Send(json, "cache-tenant", acme)).Cache);
        Assert.Equal("miss", (await Send(json, "cache-tenant", globex)).Cache);
        var changed = JsonNode.Parse(json)!.AsObject();
        changed["max_tokens"] = 7;
        Assert.Equal("miss", (await Send(changed.ToJsonString(), "cache-tenant", acme)).Cache);
        // key order and ignored fields do not matter
        var reordered = new JsonObject { ["messages"] = JsonNode.Parse(json)!["messages"]!.DeepClone(), ["temperature"] = 0, ["user"] = "someone", ["model"] = "gpt-4o-mini", ["stream"] = false };
        Assert.Equal("hit", (await Send(reordered.ToJsonString(), "cache-tenant", acme)).Cache);
    }

    [Fact]
    public async Task One_hundred_concurrent_identical_misses_make_one_upstream_call()
    {
        var json = Chat("stampede " + Guid.NewGuid());
        var before = gw.Simulator.RequestCount;
        gw.Simulator.Options.TimeToFirstToken = TimeSpan.FromMilliseconds(300);
        try
        {
            var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => Send(json, "cache-stampede")));
            Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.Status));
            Assert.Single(results, r => r.Cache == "miss");
            Assert.Equal(99, results.Count(r => r.Cache == "hit"));
            Assert.Single(results.Select(r => r.Body).Distinct());
        }
        finally
        {
            gw.Simulator.Options.TimeToFirstToken = TimeSpan.Zero;
        }
        Assert.Equal(1, gw.Simulator.RequestCount - before);
        Assert.Equal(100, (await gw.LedgerAsync("cache-stampede", 100)).Count);
    }

    [Fact]
    public async Task A_streamed_hit_is_replayed_as_sse_that_the_official_sdks_accept()
    {
        var question = "stream me from the cache " + Guid.NewGuid();
        var openai = new ChatClient("gpt-4o-mini", new ApiKeyCredential(gw.Key), new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1") });
        async Task<(string Text, int? Output)> OpenAIStream()
        {
            var sb = new System.Text.StringBuilder();
            int? output = null;
            await foreach (var u in openai.CompleteChatStreamingAsync([new UserChatMessage(question)], new ChatCompletionOptions { Temperature = 0 }))
            {
                foreach (var p in u.ContentUpdate) sb.Append(p.Text);
                output ??= u.Usage?.OutputTokenCount;
            }
            return (sb.ToString(), output);
        }
        var a = await OpenAIStream();
        var b = await OpenAIStream();
        Assert.Equal(a, b);
        Assert.True(a.Output > 0);

        // this SDK version has no temperature parameter: the caller opts in with the x-bursar-cache header instead
        var anthropic = new AnthropicClient { ApiKey = gw.Key, BaseUrl = gw.BaseUrl, MaxRetries = 0, HttpClient = new HttpClient(new OptIn { InnerHandler = new HttpClientHandler() }) };
        async Task<string> AnthropicStream()
        {
            var sb = new System.Text.StringBuilder();
            await foreach (var ev in anthropic.Messages.CreateStreaming(new MessageCreateParams { Model = "claude-haiku-4-5", MaxTokens = 100, Messages = [new UserMessageParam(question)] }))
                if (ev.TryPickContentBlockDelta(out var d) && d.Delta.TryPickText(out var t)) sb.Append(t.Text);
            return sb.ToString();
        }
        var c = await AnthropicStream();
        Assert.Equal(c, await AnthropicStream());
        Assert.True(c.Length > 0);
        var hits = Array.Empty<Bursar.Core.Ledger.LedgerRecord>();
        for (var i = 0; i < 100 && hits.Length < 2; i++)
        {
            await Task.Delay(25); // the ledger is written off the request path
            hits = (await gw.Store.ReadAsync(new Bursar.Core.Ledger.LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Provider == "bursar-cache" && r.Streamed).ToArray();
        }
        Assert.Equal(2, hits.Length); // one OpenAI and one Anthropic replay
        Assert.Contains(hits, h => h.Dialect == "openai");
        Assert.Contains(hits, h => h.Dialect == "anthropic");
    }

    private sealed class OptIn : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Add("x-bursar-cache", "on");
            return base.SendAsync(request, cancellationToken);
        }
    }
}
