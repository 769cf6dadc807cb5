using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Bursar's prompt-cache placement against the Simulator's Anthropic cache model, with the saving credited in the ledger.</summary>
[Collection(GatewayCollection.Name)]
public sealed class PromptCacheGatewayTests(GatewayFixture gw)
{
    private static string Policy(string salt) => salt + " " + string.Join(" ", Enumerable.Range(0, 600).Select(i => $"Policy {i}: answer politely and cite the order."));

    private async Task Call(string system, string question, string feature)
    {
        var json = new JsonObject
        {
            ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 50, ["system"] = system,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }),
        }.ToJsonString();
        using var req = gw.Post("/v1/messages", json, feature: feature);
        using var resp = await gw.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
    }

    [Fact]
    public async Task Placed_breakpoints_give_cache_reads_on_the_second_call_and_the_ledger_credits_the_net_saving()
    {
        var system = Policy(Guid.NewGuid().ToString("N"));
        await Call(system, "first question", "pc-place");
        await gw.LedgerAsync("pc-place", 1); // ordered: the second call comes after the first is metered
        await Call(system, "second question", "pc-place");
        var rows = (await gw.LedgerAsync("pc-place", 2)).OrderBy(r => r.CacheReadTokens).ToArray();
        var write = rows[0];
        var read = rows[1];
        Assert.True(write.CacheWrite5mTokens > 1024, $"write {write.CacheWrite5mTokens}");
        Assert.Equal(write.CacheWrite5mTokens, read.CacheReadTokens);
        // Sonnet 4.5: input 3, 5m write 3.75, read 0.30 (USD / MTok); saving = uncached cost - actual cost
        Assert.Equal(-write.CacheWrite5mTokens * 0.75m / 1_000_000m, write.SavingPromptCache);
        Assert.Equal(read.CacheReadTokens * 2.70m / 1_000_000m, read.SavingPromptCache);
        Assert.Equal(read.Cost + read.SavingPromptCache, read.CounterfactualCost);
    }

    [Fact]
    public async Task A_timestamp_in_the_system_prompt_is_detected_and_priced()
    {
        await Call("Current time: 2026-11-23T10:00:00Z. " + Policy("vol"), "q", "pc-volatile");
        await gw.LedgerAsync("pc-volatile", 1);
        await Call("Current time: 2026-11-23T10:01:00Z. " + Policy("vol"), "q", "pc-volatile");
        var rows = await gw.LedgerAsync("pc-volatile", 2);
        var flagged = Assert.Single(rows, r => r.VolatilePrefix is not null);
        Assert.Contains("timestamp ('2026-11-23T10:01:00Z')", flagged.VolatilePrefix);
        Assert.Contains("per call", flagged.VolatilePrefix);
        Assert.Equal(0, flagged.CacheReadTokens); // the moved timestamp broke the cache
    }

    [Fact]
    public async Task The_opt_in_rewrite_restores_cache_reads_when_a_timestamp_moves()
    {
        await Call("Current time: 2026-11-23T11:00:00Z. " + Policy("moved"), "q", "volatile-moved");
        await gw.LedgerAsync("volatile-moved", 1);
        await Call("Current time: 2026-11-23T11:07:00Z. " + Policy("moved"), "q", "volatile-moved");
        var rows = (await gw.LedgerAsync("volatile-moved", 2)).OrderBy(r => r.CacheReadTokens).ToArray();
        Assert.All(rows, r => Assert.StartsWith("moved:", r.VolatilePrefix));
        Assert.True(rows[1].CacheReadTokens > 1024, $"read {rows[1].CacheReadTokens}");
    }
}
