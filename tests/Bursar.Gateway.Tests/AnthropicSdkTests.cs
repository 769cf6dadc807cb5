using System.Text.Json;
using Anthropic;
using Anthropic.Models.Messages;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;

namespace Bursar.Gateway.Tests;

/// <summary>The official Anthropic .NET SDK, pointed at Bursar: plain, streaming, tools, prompt caching, cross-dialect.</summary>
[Collection(GatewayCollection.Name)]
public sealed class AnthropicSdkTests(GatewayFixture gw)
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private AnthropicClient Client(string feature) => new()
    {
        ApiKey = gw.Key,
        BaseUrl = gw.BaseUrl,
        MaxRetries = 0,
        HttpClient = new HttpClient(new FeatureHeader(feature) { InnerHandler = new HttpClientHandler() }),
    };

    private sealed class FeatureHeader(string feature) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Add("x-bursar-feature", feature);
            return base.SendAsync(request, cancellationToken);
        }
    }

    private static string Text(Message m) => string.Concat(m.Content.Select(b => b.TryPickText(out var t) ? t.Text : ""));

    [Fact]
    public async Task Plain_call_returns_text_usage_and_exact_cost()
    {
        var m = await Client("an-plain").Messages.Create(new MessageCreateParams
        {
            Model = "claude-sonnet-4-5",
            MaxTokens = 256,
            Messages = [new UserMessageParam("Hello Claude")],
        });
        Assert.False(string.IsNullOrWhiteSpace(Text(m)));
        var r = Assert.Single(await gw.LedgerAsync("an-plain"));
        Assert.Equal(m.Usage.InputTokens, r.InputTokens);
        Assert.Equal(m.Usage.OutputTokens, r.OutputTokens);
        Assert.Equal((m.Usage.InputTokens * 3m + m.Usage.OutputTokens * 15m) / 1_000_000m, r.Cost);
        Assert.Equal("end_turn", r.FinishReason);
    }

    [Fact]
    public async Task Prompt_cache_read_on_the_second_call_is_billed_at_the_read_rate()
    {
        var system = string.Join(" ", Enumerable.Range(0, 500).Select(i => $"Rule {i}: keep answers short."));
        MessageCreateParams P(string q) => new()
        {
            Model = "claude-sonnet-4-5",
            MaxTokens = 128,
            System = new List<TextBlockParam> { new() { Text = system, CacheControl = new CacheControlEphemeral() } },
            Messages = [new UserMessageParam(q)],
        };
        var client = Client("an-cache");
        var first = await client.Messages.Create(P("first question"));
        var second = await client.Messages.Create(P("second question"));
        Assert.True(first.Usage.CacheCreationInputTokens > 1024);
        Assert.Equal(first.Usage.CacheCreationInputTokens, second.Usage.CacheReadInputTokens);
        var rows = (await gw.LedgerAsync("an-cache", 2)).OrderBy(r => r.Timestamp).ThenBy(r => r.CacheReadTokens).ToArray();
        var write = rows.Single(r => r.CacheWrite5mTokens > 0);
        var read = rows.Single(r => r.CacheReadTokens > 0);
        Assert.Equal((write.InputTokens * 3m + write.CacheWrite5mTokens * 3.75m + write.OutputTokens * 15m) / 1_000_000m, write.Cost);
        Assert.Equal((read.InputTokens * 3m + read.CacheReadTokens * 0.30m + read.OutputTokens * 15m) / 1_000_000m, read.Cost);
    }

    [Fact]
    public async Task Streaming_delivers_deltas_and_the_ledger_uses_the_cumulative_delta_usage()
    {
        var text = new System.Text.StringBuilder();
        long? output = null;
        await foreach (var ev in Client("an-stream").Messages.CreateStreaming(new MessageCreateParams
        {
            Model = "claude-haiku-4-5",
            MaxTokens = 256,
            Messages = [new UserMessageParam("Stream to me")],
        }))
        {
            if (ev.TryPickContentBlockDelta(out var d) && d.Delta.TryPickText(out var t)) text.Append(t.Text);
            if (ev.TryPickDelta(out var md)) output = md.Usage.OutputTokens;
        }
        Assert.True(text.Length > 5);
        var r = Assert.Single(await gw.LedgerAsync("an-stream"));
        Assert.True(r.Streamed);
        Assert.Equal(output, r.OutputTokens);
        Assert.Equal((r.InputTokens * 1m + r.OutputTokens * 5m) / 1_000_000m, r.Cost);
    }

    [Fact]
    public async Task Tool_use_round_trip()
    {
        var client = Client("an-tools");
        var tool = new Tool
        {
            Name = "get_weather",
            InputSchema = new InputSchema
            {
                Properties = new Dictionary<string, JsonElement> { ["city"] = JsonSerializer.SerializeToElement(new { type = "string" }) },
                Required = ["city"],
            },
        };
        var first = await client.Messages.Create(new MessageCreateParams
        {
            Model = "claude-sonnet-4-5",
            MaxTokens = 256,
            Tools = [tool],
            Messages = [new UserMessageParam("Weather in Paris?")],
        });
        Assert.Equal("tool_use", first.StopReason!.Raw());
        var use = first.Content.Select(b => b.TryPickToolUse(out var u) ? u : null).Single(u => u is not null)!;
        Assert.Equal("get_weather", use.Name);
        Assert.Equal("Paris", use.Input["city"].GetString());
    }

    [Fact]
    public async Task A_gpt_model_through_the_anthropic_sdk_is_translated_both_ways()
    {
        var m = await Client("an-cross").Messages.Create(new MessageCreateParams
        {
            Model = "gpt-4o-mini",
            MaxTokens = 100,
            Messages = [new UserMessageParam("Hi GPT")],
        });
        Assert.False(string.IsNullOrWhiteSpace(Text(m)));
        Assert.True(m.Usage.OutputTokens > 0);
        var text = new System.Text.StringBuilder();
        await foreach (var ev in Client("an-cross").Messages.CreateStreaming(new MessageCreateParams
        {
            Model = "gpt-4o-mini",
            MaxTokens = 100,
            Messages = [new UserMessageParam("Stream, GPT")],
        }))
        {
            if (ev.TryPickContentBlockDelta(out var d) && d.Delta.TryPickText(out var t)) text.Append(t.Text);
        }
        Assert.True(text.Length > 0);
        var rows = await gw.LedgerAsync("an-cross", 2);
        Assert.All(rows, r => Assert.Equal("openai (simulator)", r.Provider));
        Assert.All(rows, r => Assert.True(r.OutputTokens > 0 && r.Cost > 0));
    }

    [Fact]
    public async Task Count_tokens_answers_locally()
    {
        var n = await Client("an-count").Messages.CountTokens(new MessageCountTokensParams
        {
            Model = "claude-sonnet-4-5",
            Messages = [new UserMessageParam("How many tokens is this sentence?")],
        });
        Assert.InRange(n.InputTokens, 5, 40);
    }
}
