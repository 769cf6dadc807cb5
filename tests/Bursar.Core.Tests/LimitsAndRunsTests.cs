using Bursar.Core.Limits;
using Bursar.Core.Runs;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests;

public sealed class LimitsAndRunsTests
{
    [Fact]
    public void Requests_per_minute_admit_a_minute_of_burst_then_refuse_with_retry_after()
    {
        var time = new FakeTimeProvider();
        var rl = new RateLimiter(time);
        rl.Load([new RateLimitDefinition(RateLimitScope.Key, "k", 3, null)]);
        for (var i = 0; i < 3; i++) Assert.True(rl.TryAcquire("k", null, null, 10, out _));
        Assert.False(rl.TryAcquire("k", null, null, 10, out var refusal));
        Assert.InRange(refusal!.RetryAfter.TotalSeconds, 19, 21);
        Assert.Contains("3 requests per minute", refusal.Message);
        Assert.True(rl.TryAcquire("other", null, null, 10, out _));
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.True(rl.TryAcquire("k", null, null, 10, out _));
    }

    [Fact]
    public void Tokens_per_minute_count_the_call_size_and_a_refusal_consumes_nothing()
    {
        var time = new FakeTimeProvider();
        var rl = new RateLimiter(time);
        rl.Load([new RateLimitDefinition(RateLimitScope.Customer, "acme", 100, 1000), new RateLimitDefinition(RateLimitScope.Team, "eng", 2, null)]);
        Assert.True(rl.TryAcquire("k", "eng", "acme", 600, out _));
        Assert.False(rl.TryAcquire("k", "eng", "acme", 600, out var r1));
        Assert.Equal("tokens", r1!.Unit);
        Assert.True(rl.TryAcquire("k", "eng", "acme", 300, out _)); // the refused call consumed no request slot
        Assert.False(rl.TryAcquire("k", "eng", "acme", 1, out var r2));
        Assert.Equal("requests", r2!.Unit);
        Assert.Equal(RateLimitScope.Team, r2.Limit.Scope);
    }

    private static RunTracker Runs(RunCapOptions o, FakeTimeProvider t) { o.Validate(); return new RunTracker(o, t); }

    [Fact]
    public void A_run_stops_at_its_turn_cap_and_says_why()
    {
        var t = new FakeTimeProvider();
        var runs = Runs(new RunCapOptions { MaxTurns = 2 }, t);
        Assert.True(runs.TryStart("k", "r1", 0.01m, out _));
        Assert.Null(runs.Complete("k", "r1", new RunTurn(1, 0.01m, "tool_use", null)));
        Assert.True(runs.TryStart("k", "r1", 0.01m, out _));
        Assert.Equal("max_turns (2)", runs.Complete("k", "r1", new RunTurn(1, 0.01m, "tool_use", null)));
        Assert.False(runs.TryStart("k", "r1", 0.01m, out var refusal));
        Assert.Contains("max_turns (2)", refusal!.Message);
        Assert.Contains("r1", refusal.Message);
        Assert.True(runs.TryStart("other-key", "r1", 0.01m, out _)); // runs are scoped by key
    }

    [Fact]
    public void Tool_call_and_spend_caps_end_a_run()
    {
        var t = new FakeTimeProvider();
        var runs = Runs(new RunCapOptions { MaxToolCalls = 3, MaxSpendUsd = 1m }, t);
        runs.TryStart(null, "a", 0, out _);
        Assert.Equal("max_tool_calls (3)", runs.Complete(null, "a", new RunTurn(3, 0, "tool_use", null)));
        runs.TryStart(null, "b", 0.5m, out _);
        runs.Complete(null, "b", new RunTurn(0, 0.7m, "end_turn", null));
        Assert.False(runs.TryStart(null, "b", 0.5m, out var refusal)); // 0.7 + 0.5 > 1
        Assert.Contains("spend cap of $1", refusal!.Message);
    }

    [Fact]
    public void Done_conditions_end_a_run_and_idle_runs_expire()
    {
        var t = new FakeTimeProvider();
        var runs = Runs(new RunCapOptions { DoneWhenAnsweredWithoutTools = true, StopMarker = "<DONE>", DonePattern = "^FINAL ANSWER", IdleExpiry = TimeSpan.FromMinutes(10) }, t);
        runs.TryStart(null, "a", 0, out _);
        Assert.Null(runs.Complete(null, "a", new RunTurn(1, 0, "tool_use", "calling a tool")));
        runs.TryStart(null, "a", 0, out _);
        Assert.Equal("done: answered without a tool call", runs.Complete(null, "a", new RunTurn(0, 0, "end_turn", "it is 18C")));
        runs.TryStart(null, "m", 0, out _);
        Assert.Equal("done: stop marker", runs.Complete(null, "m", new RunTurn(1, 0, "tool_use", "x <DONE> y")));
        runs.TryStart(null, "p", 0, out _);
        Assert.Equal("done: text matched the done pattern", runs.Complete(null, "p", new RunTurn(2, 0, "tool_use", "FINAL ANSWER: 42")));
        Assert.False(runs.TryStart(null, "a", 0, out _));
        t.Advance(TimeSpan.FromMinutes(11));
        Assert.True(runs.TryStart(null, "a", 0, out _)); // idle: forgotten, a fresh run
    }

    [Fact]
    public void Invalid_run_options_are_refused_at_start()
    {
        Assert.Throws<InvalidOperationException>(() => new RunCapOptions { DonePattern = "(" }.Validate());
        Assert.Throws<InvalidOperationException>(() => new RunCapOptions { MaxTurns = 0 }.Validate());
    }

    [Fact]
    public void Parallel_calls_of_one_run_cannot_jointly_pass_its_spend_cap()
    {
        // a tool loop fanning out: each call checked against spend so far alone would let all eight through
        var runs = Runs(new RunCapOptions { MaxSpendUsd = 1.00m, MaxTurns = null }, new FakeTimeProvider());
        var admitted = Enumerable.Range(0, 8).Count(i => runs.TryStart("k", "fan", 0.30m, out _));
        Assert.Equal(3, admitted);
        Assert.False(runs.TryStart("k", "fan", 0.30m, out var refusal));
        Assert.Contains("held by calls in flight", refusal!.Message);
        // one finishes at $0.05: its $0.30 hold is released, so another call fits
        runs.Complete("k", "fan", new RunTurn(1, 0.05m, "tool_use", null), 0.30m);
        Assert.True(runs.TryStart("k", "fan", 0.30m, out _));
    }

    [Fact]
    public void Parallel_calls_of_one_run_cannot_jointly_pass_its_turn_cap()
    {
        var runs = Runs(new RunCapOptions { MaxTurns = 3 }, new FakeTimeProvider());
        Assert.Equal(3, Enumerable.Range(0, 10).Count(i => runs.TryStart("k", "r", 0m, out _)));
        runs.Release("k", "r", 0m); // one of them was refused by a budget afterwards
        Assert.True(runs.TryStart("k", "r", 0m, out _));
    }
}
