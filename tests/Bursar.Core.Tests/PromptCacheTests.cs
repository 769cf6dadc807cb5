using System.Text.Json.Nodes;
using Bursar.Core.Caching;
using Bursar.Core.Tokens;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests;

public sealed class PromptCacheTests
{
    private static readonly string Long = string.Join(" ", Enumerable.Range(0, 700).Select(i => $"rule {i} applies"));

    private static JsonObject Request(string system, int messages = 1, bool tools = false)
    {
        var msgs = new JsonArray();
        for (var i = 0; i < messages; i++) msgs.Add(new JsonObject { ["role"] = i % 2 == 0 ? "user" : "assistant", ["content"] = "turn " + i });
        var o = new JsonObject { ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 10, ["system"] = system, ["messages"] = msgs };
        if (tools) o["tools"] = new JsonArray(new JsonObject { ["name"] = "t1", ["input_schema"] = new JsonObject { ["type"] = "object", ["description"] = Long } });
        return o;
    }

    private static PromptCachePlacer Placer(FakeTimeProvider? t = null) => new(TokenCounter.Default, t ?? new FakeTimeProvider());

    [Fact]
    public void Marks_the_end_of_a_long_system_prompt_and_not_a_short_one()
    {
        var body = Request(Long);
        var r = Placer().Place(body, "claude-sonnet-4-5", "route", 1024);
        Assert.Equal(1, r.Placed);
        Assert.Equal("ephemeral", body["system"]![0]!["cache_control"]!["type"]!.GetValue<string>());
        Assert.True(r.CachedPrefixTokens >= 1024);

        var shortBody = Request("Be brief.");
        Assert.Equal(0, Placer().Place(shortBody, "claude-sonnet-4-5", "route", 1024).Placed);
        Assert.DoesNotContain("cache_control", shortBody.ToJsonString());
    }

    [Fact]
    public void Marks_tools_system_and_the_last_stable_turn_of_a_conversation()
    {
        var body = Request(Long, messages: 5, tools: true);
        var r = Placer().Place(body, "claude-sonnet-4-5", "route", 1024);
        Assert.Equal(3, r.Placed);
        Assert.NotNull(body["tools"]![0]!["cache_control"]);
        Assert.NotNull(body["system"]![0]!["cache_control"]);
        Assert.NotNull(body["messages"]![3]!["content"]![0]!["cache_control"]); // the turn before the newest user message
        Assert.Null(body["messages"]![4]!["content"]![0]!["cache_control"]);
    }

    [Fact]
    public void Callers_markers_are_kept_and_four_is_never_exceeded()
    {
        var body = Request(Long, messages: 5, tools: true);
        var msgs = (JsonArray)body["messages"]!;
        for (var i = 0; i < 3; i++) msgs[i]!["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "m" + i, ["cache_control"] = new JsonObject { ["type"] = "ephemeral" } });
        var r = Placer().Place(body, "claude-sonnet-4-5", "route", 1024);
        Assert.Equal(3, r.CallerBreakpoints);
        Assert.Equal(1, r.Placed);
        Assert.Equal(4, PromptCachePlacer.CountBreakpoints(body));
        Assert.All(Enumerable.Range(0, 3), i => Assert.NotNull(msgs[i]!["content"]![0]!["cache_control"]));

        var full = Request(Long);
        full["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
        var arr = new JsonArray();
        for (var i = 0; i < 3; i++) arr.Add(new JsonObject { ["type"] = "text", ["text"] = "s" + i, ["cache_control"] = new JsonObject { ["type"] = "ephemeral" } });
        full["system"] = arr;
        Assert.Equal(0, Placer().Place(full, "claude-sonnet-4-5", "route", 0).Placed);
    }

    [Fact]
    public void The_ttl_follows_the_observed_reuse_interval()
    {
        var time = new FakeTimeProvider();
        var placer = Placer(time);
        var b1 = Request(Long);
        Assert.Equal("5m", placer.Place(b1, "claude-sonnet-4-5", "r", 1024).Ttl);
        time.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal("5m", placer.Place(Request(Long), "claude-sonnet-4-5", "r", 1024).Ttl); // dense reuse: 5-minute writes
        time.Advance(TimeSpan.FromMinutes(20));
        var sparse = Request(Long);
        Assert.Equal("1h", placer.Place(sparse, "claude-sonnet-4-5", "r", 1024).Ttl); // sparser than 5 minutes: 1-hour writes pay
        Assert.Equal("1h", sparse["system"]![0]!["cache_control"]!["ttl"]!.GetValue<string>());
    }

    [Fact]
    public void A_one_hour_caller_marker_later_forces_one_hour_before_it()
    {
        var body = Request(Long, messages: 3);
        body["messages"]![2]!["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "q", ["cache_control"] = new JsonObject { ["type"] = "ephemeral", ["ttl"] = "1h" } });
        var r = Placer().Place(body, "claude-sonnet-4-5", "r", 1024);
        Assert.True(r.Placed >= 1);
        Assert.Equal("1h", body["system"]![0]!["cache_control"]!["ttl"]!.GetValue<string>());
    }

    [Fact]
    public void A_system_prompt_that_moves_only_in_a_timestamp_is_detected()
    {
        var d = new VolatilePrefixDetector();
        Assert.Null(d.Observe("r", "You are helpful. Now: 2026-11-23T10:00:00Z. " + Long, 1500));
        var v = d.Observe("r", "You are helpful. Now: 2026-11-23T10:05:00Z. " + Long, 1500);
        Assert.NotNull(v);
        Assert.Equal("timestamp", v!.Kind);
        Assert.Equal("2026-11-23T10:05:00Z", v.Example);
        Assert.Contains("$0.00405 per call", v.Describe(1500 * (3m - 0.3m) / 1_000_000m));
        Assert.Null(d.Observe("r", "A different prompt entirely. " + Long, 1500));
        Assert.Null(d.Observe("other", "You are helpful. Now: 2026-11-23T10:05:00Z. " + Long, 1500));
        Assert.Null(d.Observe("ids", "session req_abc123456 " + Long, 10));
        Assert.Equal("id", d.Observe("ids", "session req_zzz987654 " + Long, 10)!.Kind);
    }

    [Fact]
    public void The_detector_keeps_no_system_prompt_text_and_still_names_the_value_that_moved()
    {
        var d = new VolatilePrefixDetector();
        var first = Observe(d, "2026-11-23T10:00:00Z");
        GC.Collect();
        Assert.False(first.IsAlive); // a multi-megabyte prompt per route is not held
        var v = d.Observe("r", "Ids 2026-11-23 and 10:00 then 2026-11-23T10:07:00Z. " + new string('x', 200_000), 1500);
        Assert.Equal(("timestamp", "2026-11-23T10:07:00Z"), (v!.Kind, v.Example));
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference Observe(VolatilePrefixDetector d, string stamp)
    {
        var text = "Ids 2026-11-23 and 10:00 then " + stamp + ". " + new string('x', 200_000);
        Assert.Null(d.Observe("r", text, 1500));
        return new WeakReference(text);
    }

    [Fact]
    public void The_opt_in_rewrite_moves_volatile_values_after_the_stable_prefix()
    {
        var body = Request("Today is 2026-11-23 and the request id is 7f3e2a1b-0000-4c1d-9e2f-123456789abc. " + Long);
        Assert.True(PromptCachePlacer.MoveVolatileToEnd(body));
        var system = body["system"]!.GetValue<string>();
        Assert.DoesNotContain("2026-11-23", system);
        Assert.Contains("[timestamp 1]", system);
        var user = body["messages"]![0]!["content"]!.GetValue<string>();
        Assert.StartsWith("Values for this request: [timestamp 1] = 2026-11-23; [id 2] = 7f3e2a1b-0000-4c1d-9e2f-123456789abc", user);
        Assert.EndsWith("turn 0", user);
    }
}
