using Bursar.Core.Attribution;
using Bursar.Core.Pipeline;
using Bursar.Core.Runs;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>An ended run takes no further calls, not even ones a cache could answer; a live run passes.</summary>
public sealed class RunGuardStageTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));

    private RunTracker Runs(int maxTurns = 1)
    {
        var o = new RunCapOptions { MaxTurns = maxTurns, IdleExpiry = TimeSpan.FromMinutes(10) };
        o.Validate();
        return new RunTracker(o, _time);
    }

    private static LeverCall RunCall(string run, string keyId = "key_1") =>
        Levers.Call(Levers.OpenAI("gpt-4o-mini", "next step"), key: Levers.Key(id: keyId), tags: Levers.Headers((AttributionResolver.RunHeader, run)));

    /// <summary>Ends <paramref name="run"/> of <paramref name="keyId"/> at its one-turn cap.</summary>
    private static void End(RunTracker runs, string keyId, string run)
    {
        Assert.True(runs.TryStart(keyId, run, 0.01m, out _));
        Assert.Equal("max_turns (1)", runs.Complete(keyId, run, new RunTurn(0, 0.01m, "stop", null), 0.01m));
    }

    [Fact]
    public async Task An_ended_run_is_refused_with_429_naming_the_run_and_why_without_calling_next()
    {
        var runs = Runs();
        End(runs, "key_1", "r-ended");
        var call = RunCall("r-ended");
        var next = new FakeProvider();
        await new RunGuardStage(runs).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        var r = call.Refusal!;
        Assert.Equal((429, "run_limit_exceeded", "run_limit_exceeded", Blame.Policy), (r.Status, r.Code, r.Type, r.Blame));
        Assert.Contains("r-ended", r.Message);
        Assert.Contains("max_turns (1)", r.Message);
        Assert.Equal(("refused", 429), (call.Outcome, call.StatusCode));
    }

    [Fact]
    public async Task A_live_run_and_a_call_without_a_run_pass()
    {
        var runs = Runs(maxTurns: 5);
        Assert.True(runs.TryStart("key_1", "r-live", 0.01m, out _));
        runs.Complete("key_1", "r-live", new RunTurn(1, 0.01m, "tool_use", null), 0.01m);
        var stage = new RunGuardStage(runs);

        var live = RunCall("r-live");
        var next = new FakeProvider();
        await stage.InvokeAsync(live, next.Next, default);
        Assert.Null(live.Refusal);

        var noRun = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        await stage.InvokeAsync(noRun, next.Next, default);
        Assert.Null(noRun.Refusal);

        var unknown = RunCall("r-never-seen");
        await stage.InvokeAsync(unknown, next.Next, default);
        Assert.Null(unknown.Refusal);

        Assert.Equal(3, next.Calls);
    }

    [Fact]
    public async Task Runs_are_scoped_by_key_and_an_ended_run_that_went_idle_passes_again()
    {
        var runs = Runs();
        End(runs, "key_1", "r1");
        var stage = new RunGuardStage(runs);
        var next = new FakeProvider();

        var otherKey = RunCall("r1", keyId: "key_2");
        await stage.InvokeAsync(otherKey, next.Next, default);
        Assert.Null(otherKey.Refusal); // another key's run of the same name is another run

        _time.Advance(TimeSpan.FromMinutes(11)); // past the idle expiry: the run is forgotten
        var later = RunCall("r1");
        await stage.InvokeAsync(later, next.Next, default);
        Assert.Null(later.Refusal);
        Assert.Equal(2, next.Calls);
    }
}
