using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The meter: a finished <see cref="Bursar.Core.Pipeline.LeverCall"/> priced into its one ledger record, with what each lever saved.</summary>
public sealed class CallMeterTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private MeterKit _kit = null!;

    public Task InitializeAsync()
    {
        _kit = new MeterKit(_time);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _kit.DisposeAsync();

    private static ModelPrice Price(string model) => Levers.Catalog.Find(model).Price!;

    private static readonly TokenUsage Usage = new(InputTokens: 1200, CacheReadTokens: 0, CacheWrite5mTokens: 0, CacheWrite1hTokens: 0, OutputTokens: 300);

    [Fact]
    public void An_answered_call_is_priced_from_its_usage_and_carries_its_attribution()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"), key: Levers.Key(id: "key_7", team: "eng"),
            tags: Levers.Headers((AttributionResolver.FeatureHeader, "search"), (AttributionResolver.TaskHeader, "qa")), clock: _time);
        call.Provider = "openai";
        call.Summary.Model = "gpt-4o-mini-2024-07-18";
        call.Summary.Usage = Usage;
        call.Summary.UsageSeen = call.Summary.UsageFinal = call.Summary.Answered = true;
        call.Summary.FinishReason = "stop";
        call.StatusCode = 200;
        _time.Advance(TimeSpan.FromMilliseconds(250));

        var r = _kit.Meter.Build(call);
        var cost = CostCalculator.Compute(Price("gpt-4o-mini"), Usage).Total;
        Assert.Equal((call.Id, "ok", 200, true, cost), (r.Id, r.Outcome, r.StatusCode, r.Priced, r.Cost));
        Assert.Equal(("key_7", "eng", "search", "qa"), (r.KeyId, r.Team, r.Feature, r.Task));
        Assert.Equal(("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "openai"), (r.RequestedModel, r.ServedModel, r.Provider, r.Dialect));
        Assert.Equal((1200L, 300L, "stop"), (r.InputTokens, r.OutputTokens, r.FinishReason));
        Assert.Equal(250, r.LatencyMs, 3);
        Assert.Equal(cost, r.CounterfactualCost); // no lever saved anything
        Assert.False(r.UsageEstimated);
    }

    [Fact]
    public void A_cache_hit_costs_nothing_and_saves_what_the_replayed_call_cost()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        var hit = new CachedResponse([1, 2, 3], "application/json", "gpt-4o-mini", 0.0042m, 1200, 300, _time.GetUtcNow());
        ExactCacheStage.Hit(call, hit, semantic: false);

        var r = _kit.Meter.Build(call);
        Assert.Equal((0m, 0.0042m, 0.0042m), (r.Cost, r.SavingResponseCache, r.CounterfactualCost));
        Assert.Equal(("bursar-cache", "gpt-4o-mini", 200), (r.Provider, r.ServedModel, r.StatusCode));
        Assert.False(r.UsageEstimated); // a hit uses no tokens: nothing to estimate
    }

    [Fact]
    public void A_routed_call_credits_routing_with_what_the_same_tokens_cost_on_the_model_asked_for()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4.1", "hi"));
        call.RoutedFrom = "gpt-4.1";
        call.RoutingReason = "policy: route 'r' serves gpt-4.1-nano for gpt-4.1";
        call.Route = "r";
        call.Summary.Model = "gpt-4.1-nano";
        call.Summary.Usage = Usage;
        call.Summary.UsageSeen = call.Summary.UsageFinal = call.Summary.Answered = true;

        var r = _kit.Meter.Build(call);
        var served = CostCalculator.Compute(Price("gpt-4.1-nano"), Usage).Total;
        var asked = CostCalculator.Compute(Price("gpt-4.1"), Usage).Total;
        Assert.Equal(served, r.Cost);
        Assert.Equal(asked - served, r.SavingRouting);
        Assert.Equal(asked, r.CounterfactualCost);
        Assert.Equal(("r", call.RoutingReason), (r.Route, r.RoutingReason));
    }

    [Fact]
    public void An_answer_whose_usage_never_arrived_is_billed_at_an_estimate_and_flagged_never_at_zero()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"), estimatedInputTokens: 800);
        call.EstimatedInputTokens = 800;
        call.Summary.Model = "gpt-4o-mini";
        call.Summary.Answered = true; // a 200 stream cut off before its usage chunk
        call.Summary.Deltas = 40;
        call.StatusCode = 200;

        var r = _kit.Meter.Build(call);
        Assert.True(r.UsageEstimated);
        Assert.Equal(800, r.InputTokens);
        Assert.True(r.OutputTokens >= 40);
        Assert.True(r.Cost > 0);
        Assert.Equal(("upstream_error", "usage_unreadable"), (r.Outcome, r.ErrorType));
        Assert.Contains("usage estimated", r.ErrorMessage);
    }

    [Fact]
    public void An_unpriced_model_with_usage_has_an_unknown_cost_not_zero()
    {
        var before = _kit.Meter.UnpricedCalls;
        var call = Levers.Call(Levers.OpenAI("my-local-finetune", "hi"));
        call.Summary.Model = "my-local-finetune";
        call.Summary.Usage = Usage;
        call.Summary.UsageSeen = call.Summary.UsageFinal = call.Summary.Answered = true;

        var r = _kit.Meter.Build(call);
        Assert.Null(r.Cost);
        Assert.False(r.Priced);
        Assert.Equal(before + 1, _kit.Meter.UnpricedCalls);
    }

    [Fact]
    public async Task FinishAsync_appends_the_record_the_completion_returns()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        var written = await _kit.Meter.FinishAsync(call, (_, record) => record with { RunEndReason = "max_turns (1)" });
        Assert.Equal("max_turns (1)", written.RunEndReason);
        var stored = Assert.Single(await _kit.FlushAsync());
        Assert.Equal((call.Id, "max_turns (1)"), (stored.Id, stored.RunEndReason));
    }
}
