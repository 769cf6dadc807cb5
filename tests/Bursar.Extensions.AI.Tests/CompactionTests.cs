using System.Text.Json.Nodes;
using Bursar.Core.Context;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI.Tests;

/// <summary>Context compaction in the library face: a route opting in compacts the ChatMessages of each call, through the official SDKs' chat clients on the Simulator.</summary>
public sealed class CompactionTests
{
    private static ChatOptions Tags(string feature) => new() { AdditionalProperties = new() { ["bursar.feature"] = feature } };

    /// <summary>A 9-turn agent conversation: the user asks, the agent calls a tool, reads its (long) result, answers; the newest turn is the user's question.</summary>
    private static List<ChatMessage> Conversation(int turns)
    {
        var messages = new List<ChatMessage> { new(ChatRole.System, "You are an airline agent. Follow the policy.") };
        for (var i = 0; i < turns; i++)
        {
            messages.Add(new ChatMessage(ChatRole.User, $"Please check reservation RES{i:D3}X9 for me."));
            if (i == turns - 1) break;
            messages.Add(new ChatMessage(ChatRole.Assistant, [new FunctionCallContent($"call_{i}", "get_reservation_details", new Dictionary<string, object?> { ["reservation_id"] = $"RES{i:D3}X9" })]));
            var result = new JsonObject
            {
                ["reservation_id"] = $"RES{i:D3}X9", ["flight_number"] = $"HAT{100 + i}", ["date"] = "2024-05-20",
                ["notes"] = string.Join(' ', Enumerable.Repeat("The reservation was made through the website and paid in full with the card on file.", 8)),
            }.ToJsonString();
            messages.Add(new ChatMessage(ChatRole.Tool, [new FunctionResultContent($"call_{i}", result)]));
            messages.Add(new ChatMessage(ChatRole.Assistant, $"Reservation RES{i:D3}X9 is on flight HAT{100 + i}."));
        }
        return messages;
    }

    public static TheoryData<string, string, string> Cases => new()
    {
        { "openai", "gpt-4o-mini", CompactionPolicy.PruneToolResults }, { "openai", "gpt-4o-mini", CompactionPolicy.SlidingWindow },
        { "anthropic", "claude-haiku-4-5", CompactionPolicy.PruneToolResults }, { "anthropic", "claude-haiku-4-5", CompactionPolicy.SlidingWindow },
        { "openai", "gpt-4o-mini", CompactionPolicy.Retrieval }, { "anthropic", "claude-haiku-4-5", CompactionPolicy.Retrieval },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task A_route_that_opts_in_compacts_the_messages_the_provider_is_sent_and_the_row_says_what_it_removed(string sdk, string model, string strategy)
    {
        const string r = "Bursar:Routing:Routes:0:";
        await using var host = new LibraryHost($"{r}Name=agent", $"{r}Feature=agent", $"{r}Compaction:Strategy={strategy}", $"{r}Compaction:KeepTurns=2",
            $"{r}Compaction:TriggerTokens=300", $"{r}Compaction:CacheAware=false", "Bursar:SemanticCache:Generator=local");
        var client = host.Client(sdk, model);
        var messages = Conversation(9);
        var before = messages.Select(m => (m, m.Contents.ToArray())).ToArray();
        var plain = await client.GetResponseAsync(messages, Tags("plain"));
        var compacted = await client.GetResponseAsync(messages, Tags("agent"));
        Assert.False(string.IsNullOrWhiteSpace(compacted.Text));
        // the caller's list and messages are its own: unchanged
        Assert.Equal(before.Length, messages.Count);
        for (var i = 0; i < before.Length; i++) { Assert.Same(before[i].m, messages[i]); Assert.Equal(before[i].Item2, messages[i].Contents); }

        var off = Assert.Single(await host.LedgerAsync("plain"));
        var on = Assert.Single(await host.LedgerAsync("agent"));
        Assert.Null(off.ContextStrategy);
        Assert.Equal(strategy, on.ContextStrategy);
        Assert.True(on.ContextTokensRemoved > 0);
        var billed = (long?)compacted.Usage!.InputTokenCount;
        Assert.True(billed < plain.Usage!.InputTokenCount, $"compacted {billed} vs {plain.Usage.InputTokenCount} input tokens");
        // what the provider billed went down by about what the row says was removed: the messages are counted as content blocks, so an
        // OpenAI wire's tool-call framing (escaped arguments in tool_calls) is not in the count (about a quarter fewer on this conversation)
        var drop = plain.Usage.InputTokenCount!.Value - billed!.Value;
        Assert.InRange(on.ContextTokensRemoved, drop * 0.7, drop * 1.3);
        Assert.Equal(on.Cost + on.SavingCompaction, on.CounterfactualCost);
        // a step re-writes the cache from its first change: on OpenAI (writes implicit, at the input rate) it pays; on Anthropic the cost is
        // what the call wrote again at 1.25x, and below Haiku 4.5's 4,096-token minimum nothing is cached, so nothing is re-written
        Assert.Equal(0, on.CacheWrite5mTokens + off.CacheWrite5mTokens);
        Assert.True(on.SavingCompaction > 0, $"{on.SavingCompaction}");
        if (sdk == "anthropic") Assert.Equal(on.ContextTokensRemoved * 1.00m / 1_000_000m, on.SavingCompaction);
    }

    [Fact]
    public async Task On_a_cached_Anthropic_conversation_a_sliding_window_step_that_rewrites_the_cache_is_credited_as_the_loss_it_is()
    {
        // Sonnet 4.5 caches from 1,024 tokens: the plain call writes the conversation to the cache; the compacted one changes its head
        // (the new header), so what follows is written again at 1.25x the input rate and read at 0.1x: removing the older turns once does not pay
        const string r = "Bursar:Routing:Routes:0:";
        await using var host = new LibraryHost($"{r}Name=agent", $"{r}Feature=agent", $"{r}Compaction:Strategy={CompactionPolicy.SlidingWindow}",
            $"{r}Compaction:KeepTurns=5", $"{r}Compaction:TriggerTokens=300", $"{r}Compaction:CacheAware=false", "Bursar:SemanticCache:Generator=local");
        var client = host.Client("anthropic", "claude-sonnet-4-5");
        var messages = Conversation(12);
        await client.GetResponseAsync(messages, Tags("plain"));
        await client.GetResponseAsync(messages, Tags("agent"));
        var off = Assert.Single(await host.LedgerAsync("plain"));
        var on = Assert.Single(await host.LedgerAsync("agent"));
        Assert.True(off.CacheWrite5mTokens > 0, "the plain call wrote its prefix to the cache");
        Assert.True(on.CacheWrite5mTokens > 0, $"the compacted call wrote its changed prefix again: in={on.InputTokens} r={on.CacheReadTokens} w={on.CacheWrite5mTokens}; off in={off.InputTokens} w={off.CacheWrite5mTokens}");
        Assert.True(on.ContextTokensRemoved > 0);
        Assert.True(on.SavingCompaction < 0, $"{on.SavingCompaction} (removed {on.ContextTokensRemoved}, written {on.CacheWrite5mTokens})");
        Assert.Equal(on.Cost + on.SavingPromptCache + on.SavingCompaction, on.CounterfactualCost);
    }

    [Fact]
    public async Task A_short_conversation_goes_to_the_provider_as_the_caller_built_it()
    {
        const string r = "Bursar:Routing:Routes:0:";
        await using var host = new LibraryHost($"{r}Name=agent", $"{r}Feature=agent", $"{r}Compaction:Strategy=sliding-window", $"{r}Compaction:KeepTurns=3");
        var client = host.Client("openai", "gpt-4o-mini");
        var plain = await client.GetResponseAsync(Conversation(2), Tags("plain"));
        var short_ = await client.GetResponseAsync(Conversation(2), Tags("agent"));
        Assert.Equal(plain.Usage!.InputTokenCount, short_.Usage!.InputTokenCount);
        var row = Assert.Single(await host.LedgerAsync("agent"));
        Assert.Null(row.ContextStrategy);
        Assert.Equal(0, row.ContextTokensRemoved);
    }
}
