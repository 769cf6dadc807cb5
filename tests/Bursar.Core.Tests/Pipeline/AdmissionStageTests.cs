using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Limits;
using Bursar.Core.Pipeline;
using Bursar.Core.Runs;
using Bursar.Core.Tokens;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The last word before money is spent: rate limits, run caps, budgets (or the key's cheaper model).</summary>
public sealed class AdmissionStageTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private readonly RateLimiter _limiter;
    private readonly RunTracker _runs;

    public AdmissionStageTests()
    {
        _limiter = new RateLimiter(_time);
        _runs = new RunTracker(new RunCapOptions { MaxSpendUsd = 1m }, _time);
    }

    private async Task<BudgetManager> Budgets(params BudgetDefinition[] defs)
    {
        var m = new BudgetManager(new MemoryBudgetStore(defs), new NoAlerts(), _time, NullLogger<BudgetManager>.Instance);
        await m.ReloadAsync(default);
        return m;
    }

    private static BudgetDefinition Daily(string id, decimal limit, BudgetScope scope = BudgetScope.Global, string? value = null) =>
        new() { Id = id, Scope = scope, Value = value, Period = BudgetPeriod.Day, LimitUsd = limit };

    private AdmissionStage Stage(BudgetManager budgets, IServedModels? served = null) =>
        new(new AdmissionControl(budgets, _limiter, _runs, Levers.Catalog, served ?? IServedModels.Any, TokenCounter.Default, _time));

    /// <summary>A gpt-4o call of 1,000 input tokens that may write 1,000 output tokens: $0.0025 + $0.01 at worst.</summary>
    private static LeverCall Gpt4o(Bursar.Core.Keys.VirtualKey? key = null, Func<string, string?>? tags = null)
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o", "Summarize this contract", maxTokens: 1000), key: key, tags: tags, estimatedInputTokens: 1000);
        call.MaxTokens = call.Request.MaxTokens; // what the output-cap stage leaves for admission
        return call;
    }

    private static decimal WorstCase(string model, long input, long output) => AdmissionControl.WorstCase(Levers.Catalog.Find(model).Price, input, output);

    [Fact]
    public async Task A_budget_the_worst_case_would_exceed_is_a_429_budget_exceeded_and_next_is_not_called()
    {
        var worst = WorstCase("gpt-4o", 1000, 1000);
        var budgets = await Budgets(Daily("daily-cap", worst / 2));
        var call = Gpt4o();
        var next = new FakeProvider();
        await Stage(budgets).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        var r = call.Refusal!;
        Assert.Equal((429, "budget_exceeded", "budget_exceeded", Blame.Policy), (r.Status, r.Code, r.Type, r.Blame));
        Assert.Contains("'daily-cap'", r.Message);
        Assert.Contains(worst.ToString(System.Globalization.CultureInfo.InvariantCulture), r.Message); // what this call could cost
        Assert.Equal(14 * 3600, r.RetryAfterSeconds); // the day budget resets at midnight UTC
        Assert.Equal(("refused", 429), (call.Outcome, call.StatusCode));
        Assert.Equal(0m, Assert.Single(budgets.Snapshot()).ReservedUsd); // nothing is held for a refused call
    }

    [Fact]
    public async Task A_call_that_fits_reserves_its_worst_case_at_the_capped_output_limit_and_goes_on()
    {
        var budgets = await Budgets(Daily("roomy", 10m));
        var call = Gpt4o();
        call.MaxTokens = 100; // the output cap lowered the caller's 1,000
        var next = new FakeProvider();
        await Stage(budgets).InvokeAsync(call, next.Next, default);

        Assert.Equal(1, next.Calls);
        Assert.Null(call.Refusal);
        Assert.Equal("gpt-4o", call.Model);
        Assert.Equal(WorstCase("gpt-4o", 1000, 100), call.Admitted.WorstCaseUsd);
        Assert.Equal(call.Admitted.WorstCaseUsd, Assert.Single(budgets.Snapshot()).ReservedUsd);
        Assert.Equal(["roomy"], call.Admitted.Reservation.BudgetIds);
    }

    [Fact]
    public async Task Without_an_output_cap_stage_the_callers_own_limit_is_what_admission_reserves()
    {
        var fits = WorstCase("gpt-4o", 1000, 1000);
        var budgets = await Budgets(Daily("just-enough", fits * 2));
        var call = Levers.Call(Levers.OpenAI("gpt-4o", "Summarize this contract", maxTokens: 1000), estimatedInputTokens: 1000); // no output-cap stage ran
        var next = new FakeProvider();
        await Stage(budgets).InvokeAsync(call, next.Next, default);

        Assert.Null(call.Refusal);
        Assert.Equal(1, next.Calls);
        Assert.Equal(fits, call.Admitted.WorstCaseUsd);
    }

    [Fact]
    public async Task A_rate_limit_refuses_with_429_and_a_retry_after()
    {
        _limiter.Load([new RateLimitDefinition(RateLimitScope.Key, "key_1", 1, null)]);
        var stage = Stage(await Budgets());
        var next = new FakeProvider();

        var first = Gpt4o();
        await stage.InvokeAsync(first, next.Next, default);
        Assert.Null(first.Refusal);

        var second = Gpt4o();
        await stage.InvokeAsync(second, next.Next, default);
        Assert.Equal(1, next.Calls);
        var r = second.Refusal!;
        Assert.Equal((429, "rate_limit_exceeded", Blame.Policy), (r.Status, r.Code, r.Blame));
        Assert.Contains("1 requests per minute", r.Message);
        Assert.InRange(r.RetryAfterSeconds!.Value, 1, 60);
        Assert.Equal("refused", second.Outcome);

        var otherKey = Gpt4o(Levers.Key(id: "key_2"));
        await stage.InvokeAsync(otherKey, next.Next, default);
        Assert.Null(otherKey.Refusal);
    }

    [Fact]
    public async Task Over_budget_a_key_with_a_served_downgrade_model_is_served_by_it_and_the_ledger_says_why()
    {
        var worst = WorstCase("gpt-4o", 1000, 1000);
        var cheaper = WorstCase("gpt-4o-mini", 1000, 1000);
        Assert.True(cheaper < worst / 2);
        var budgets = await Budgets(Daily("team-eng", worst / 2, BudgetScope.Team, "eng"));
        var key = Levers.Key(team: "eng", downgrade: "gpt-4o-mini");
        var call = Gpt4o(key);
        var next = new FakeProvider();
        await Stage(budgets, new ServedModels("gpt-4o", "gpt-4o-mini")).InvokeAsync(call, next.Next, default);

        Assert.Equal(1, next.Calls);
        Assert.Null(call.Refusal);
        Assert.Equal("gpt-4o-mini", call.Model);
        Assert.Equal("gpt-4o-mini", next.Seen.Single().Model); // the provider call gets the downgraded model
        Assert.Equal(cheaper, call.Admitted.WorstCaseUsd);
        Assert.Equal(cheaper, budgets.Snapshot().Single().ReservedUsd);
        Assert.StartsWith("budget_downgrade: team 'eng' day budget (team-eng) would be exceeded on gpt-4o", call.RoutingReason);
    }

    [Fact]
    public async Task A_downgrade_model_that_is_not_served_is_not_used_and_the_call_is_refused()
    {
        var budgets = await Budgets(Daily("tight", WorstCase("gpt-4o", 1000, 1000) / 2));
        var call = Gpt4o(Levers.Key(downgrade: "gpt-4o-mini"));
        var next = new FakeProvider();
        await Stage(budgets, new ServedModels("gpt-4o")).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        Assert.Equal("budget_exceeded", call.Refusal!.Code);
        Assert.Equal("gpt-4o", call.Model);
    }

    [Fact]
    public async Task A_run_over_its_spend_cap_is_refused_and_releases_nothing_it_did_not_hold()
    {
        var budgets = await Budgets();
        var tags = Levers.Headers((AttributionResolver.RunHeader, "agent-1"));
        Assert.True(_runs.TryStart("key_1", "agent-1", 0.995m, out _)); // another call of the run holds almost all of its $1
        var call = Gpt4o(tags: tags);
        var next = new FakeProvider();
        await Stage(budgets).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        Assert.Equal(("run_limit_exceeded", 429), (call.Refusal!.Code, call.Refusal.Status));
        Assert.Contains("agent-1", call.Refusal.Message);
        Assert.Equal(0.995m, _runs.Find("key_1", "agent-1")!.HeldUsd);
    }

    [Fact]
    public async Task A_call_of_a_run_collects_its_text_when_a_done_condition_needs_it()
    {
        var runs = new RunTracker(new RunCapOptions { StopMarker = "<DONE>" }, _time);
        var stage = new AdmissionStage(new AdmissionControl(await Budgets(), _limiter, runs, Levers.Catalog, IServedModels.Any, TokenCounter.Default, _time));
        var call = Gpt4o(tags: Levers.Headers((AttributionResolver.RunHeader, "agent-2")));
        await stage.InvokeAsync(call, new FakeProvider().Next, default);
        Assert.Equal("agent-2", call.Admitted.RunId);
        Assert.NotNull(call.Summary.Text);

        var noRun = Gpt4o();
        await stage.InvokeAsync(noRun, new FakeProvider().Next, default);
        Assert.Null(noRun.Summary.Text);
    }
}
