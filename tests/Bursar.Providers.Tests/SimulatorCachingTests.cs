using System.Text.Json.Nodes;

namespace Bursar.Providers.Tests;

public sealed class SimulatorCachingTests
{
    private static JsonObject CachedSystem(string model, string text, string? ttl = null, string question = "What applies?")
    {
        var cc = new JsonObject { ["type"] = "ephemeral" };
        if (ttl is not null) cc["ttl"] = ttl;
        return new JsonObject
        {
            ["model"] = model,
            ["max_tokens"] = 100,
            ["system"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = text, ["cache_control"] = cc }),
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }),
        };
    }

    private static (long Input, long Read, long Write, long W5, long W1) Usage(JsonNode? body)
    {
        var u = body!["usage"]!;
        return (u["input_tokens"]!.GetValue<long>(), u["cache_read_input_tokens"]!.GetValue<long>(), u["cache_creation_input_tokens"]!.GetValue<long>(),
            u["cache_creation"]!["ephemeral_5m_input_tokens"]!.GetValue<long>(), u["cache_creation"]!["ephemeral_1h_input_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task Anthropic_breakpoint_writes_then_reads_and_expires_after_five_minutes()
    {
        using var h = new SimulatorHarness();
        var text = SimulatorHarness.Words(400);
        var first = Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text))).Body);
        Assert.True(first.Write >= 1024, $"write {first.Write}");
        Assert.Equal(first.Write, first.W5);
        Assert.Equal(0, first.Read);

        h.Time.Advance(TimeSpan.FromMinutes(4));
        var second = Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text, question: "Another question?"))).Body);
        Assert.Equal(first.Write, second.Read);
        Assert.Equal(0, second.Write);

        // the hit refreshed the TTL: 4 more minutes is still inside 5 minutes of the last use
        h.Time.Advance(TimeSpan.FromMinutes(4));
        Assert.Equal(first.Write, Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text))).Body).Read);

        h.Time.Advance(TimeSpan.FromMinutes(6));
        var expired = Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text))).Body);
        Assert.Equal(0, expired.Read);
        Assert.Equal(first.Write, expired.Write);
    }

    [Fact]
    public async Task A_breakpoint_on_a_tool_use_block_or_a_tool_is_not_billed_as_prompt_text()
    {
        // the cache_control marker is not prompt text: the same blocks with and without it count the same input tokens
        JsonObject Body(bool marked)
        {
            var toolUse = new JsonObject { ["type"] = "tool_use", ["id"] = "c1", ["name"] = "lookup", ["input"] = new JsonObject { ["q"] = SimulatorHarness.Words(10) } };
            var tool = new JsonObject { ["name"] = "lookup", ["description"] = "Looks things up", ["input_schema"] = new JsonObject { ["type"] = "object" } };
            if (marked)
            {
                toolUse["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
                tool["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
            }
            return new JsonObject
            {
                ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 50, ["tools"] = new JsonArray(tool),
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = "Look it up." },
                    new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(toolUse) },
                    new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = "c1", ["content"] = "found" }) }),
            };
        }
        using var h = new SimulatorHarness();
        var plain = Usage((await h.Messages(Body(false))).Body);
        using var h2 = new SimulatorHarness();
        var marked = Usage((await h2.Messages(Body(true))).Body);
        Assert.Equal(plain.Input + plain.Read + plain.Write, marked.Input + marked.Read + marked.Write);
    }

    [Fact]
    public async Task One_hour_ttl_survives_six_minutes_and_bills_as_1h_writes()
    {
        using var h = new SimulatorHarness();
        var text = SimulatorHarness.Words(400);
        var first = Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text, "1h"))).Body);
        Assert.Equal(first.Write, first.W1);
        Assert.Equal(0, first.W5);
        h.Time.Advance(TimeSpan.FromMinutes(30));
        Assert.Equal(first.Write, Usage((await h.Messages(CachedSystem("claude-sonnet-4-5", text, "1h"))).Body).Read);
    }

    [Fact]
    public async Task A_prefix_below_the_model_minimum_caches_silently_nothing()
    {
        using var h = new SimulatorHarness();
        // Haiku 4.5 needs 4096 tokens; ~1,600 is not enough
        var text = SimulatorHarness.Words(400);
        for (var i = 0; i < 2; i++)
        {
            var (status, body, _) = await h.Messages(CachedSystem("claude-haiku-4-5", text));
            Assert.Equal(200, status);
            var u = Usage(body);
            Assert.Equal((0, 0), (u.Read, u.Write));
            Assert.True(u.Input > 1024);
        }
    }

    [Fact]
    public async Task A_fifth_breakpoint_is_a_400()
    {
        using var h = new SimulatorHarness();
        var blocks = new JsonArray();
        for (var i = 0; i < 5; i++) blocks.Add(new JsonObject { ["type"] = "text", ["text"] = "part " + i, ["cache_control"] = new JsonObject { ["type"] = "ephemeral" } });
        var body = new JsonObject { ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 10, ["system"] = blocks, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) };
        var (status, resp, _) = await h.Messages(body);
        Assert.Equal(400, status);
        Assert.Equal("invalid_request_error", resp!["error"]!["type"]!.GetValue<string>());
        Assert.Contains("maximum of 4", resp["error"]!["message"]!.GetValue<string>());
    }

    private static JsonObject Conversation(int turns, int breakpointAt)
    {
        var messages = new JsonArray();
        for (var i = 0; i < turns; i++)
        {
            var block = new JsonObject { ["type"] = "text", ["text"] = (i == 0 ? SimulatorHarness.Words(400) : "turn " + i) };
            if (i == breakpointAt) block["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
            messages.Add(new JsonObject { ["role"] = i % 2 == 0 ? "user" : "assistant", ["content"] = new JsonArray(block) });
        }
        if (turns % 2 == 0) messages.Add(new JsonObject { ["role"] = "user", ["content"] = "next" });
        return new JsonObject { ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 10, ["messages"] = messages };
    }

    [Fact]
    public async Task Lookback_finds_an_earlier_entry_within_20_blocks_but_not_beyond()
    {
        using var h = new SimulatorHarness();
        var first = Usage((await h.Messages(Conversation(1, 0))).Body);
        Assert.True(first.Write > 0);
        // breakpoint moved to block 19: block 0 is within the 20-block window
        Assert.Equal(first.Write, Usage((await h.Messages(Conversation(21, 19))).Body).Read);

        using var h2 = new SimulatorHarness();
        Usage((await h2.Messages(Conversation(1, 0))).Body);
        // breakpoint at block 25: block 0 is 25 blocks back, outside the window: a fresh write, no read
        var far = Usage((await h2.Messages(Conversation(27, 25))).Body);
        Assert.Equal(0, far.Read);
        Assert.True(far.Write > first.Write);
    }

    private static JsonObject Chat(string text, string question) => new()
    {
        ["model"] = "gpt-4.1",
        ["messages"] = new JsonArray(
            new JsonObject { ["role"] = "system", ["content"] = text },
            new JsonObject { ["role"] = "user", ["content"] = question }),
    };

    [Fact]
    public async Task OpenAI_caches_automatically_from_1024_tokens_in_128_token_steps()
    {
        using var h = new SimulatorHarness();
        var text = SimulatorHarness.Words(600);
        var first = (await h.Chat(Chat(text, "q1"))).Body!["usage"]!;
        Assert.Equal(0, first["prompt_tokens_details"]!["cached_tokens"]!.GetValue<long>());
        var second = (await h.Chat(Chat(text, "a different question"))).Body!["usage"]!;
        var cached = second["prompt_tokens_details"]!["cached_tokens"]!.GetValue<long>();
        Assert.True(cached >= 1024, $"cached {cached}");
        Assert.Equal(0, (cached - 1024) % 128);
        Assert.True(cached <= second["prompt_tokens"]!.GetValue<long>());

        var small = (await h.Chat(Chat("short prompt", "q"))).Body!["usage"]!;
        var small2 = (await h.Chat(Chat("short prompt", "q"))).Body!["usage"]!;
        Assert.Equal(0, small2["prompt_tokens_details"]!["cached_tokens"]!.GetValue<long>());
        Assert.True(small["prompt_tokens"]!.GetValue<long>() < 1024);
    }
}
