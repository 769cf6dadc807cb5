using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>The semantic response cache through the gateway: similar questions hit, lookalikes and conversations do not.</summary>
[Collection(GatewayCollection.Name)]
public sealed class SemanticCacheGatewayTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, string Body, string? Cache)> Ask(string feature, string? key, params string[] turns)
    {
        var messages = new JsonArray();
        for (var i = 0; i < turns.Length; i++) messages.Add(new JsonObject { ["role"] = i % 2 == 0 ? "user" : "assistant", ["content"] = turns[i] });
        var json = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = 0.7, ["system"] = null, ["messages"] = messages };
        json.Remove("system");
        using var req = gw.Post("/v1/chat/completions", json.ToJsonString(), key, feature);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null);
    }

    [Fact]
    public async Task A_similar_question_is_served_from_the_semantic_cache_at_no_cost()
    {
        var salt = Guid.NewGuid().ToString("N")[..6];
        var first = await Ask("semantic-faq", null, $"How do I reset my password for account {salt}?");
        var second = await Ask("semantic-faq", null, $"how do I reset my password for account {salt}");
        Assert.Equal("miss", first.Cache);
        Assert.Equal("semantic-hit", second.Cache);
        Assert.Equal(first.Body, second.Body);
        var rows = (await gw.LedgerAsync("semantic-faq", 2)).Where(r => r.Provider == "bursar-semantic-cache").ToArray();
        Assert.NotEmpty(rows);
        Assert.All(rows, r => Assert.True(r.Cost == 0m && r.SavingResponseCache > 0));
    }

    [Fact]
    public async Task Lookalikes_with_different_numbers_conversations_and_other_tenants_are_not_served()
    {
        var salt = Guid.NewGuid().ToString("N")[..6];
        Assert.Equal("miss", (await Ask("semantic-faq", null, $"What is the monthly price of plan 7 in region {salt}?")).Cache);
        Assert.Equal("miss", (await Ask("semantic-faq", null, $"What is the monthly price of plan 9 in region {salt}?")).Cache); // numbers differ
        var other = await gw.CreateKeyAsync(team: null, customer: "semantic-other");
        Assert.Equal("miss", (await Ask("semantic-faq", other, $"What is the monthly price of plan 7 in region {salt}?")).Cache); // another tenant
        Assert.Equal("bypass", (await Ask("semantic-faq", null, "hi", "hello", $"What is the monthly price of plan 7 in region {salt}?")).Cache); // a conversation
        Assert.Equal("bypass", (await Ask("not-enabled", null, $"What is the monthly price of plan 7 in region {salt}?")).Cache);
    }
}
