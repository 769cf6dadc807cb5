using Bursar.Core.Routing;

namespace Bursar.Core.Tests;

public sealed class RoutingTests
{
    [Fact]
    public void Loads_mmlu_with_subjects_and_drops_contaminated_prompts()
    {
        var data = RoutingDataset.Load(SharedData.Path("routing", "mmlu"));
        Assert.Equal(57, data.Select(d => d.Category).Distinct().Count());
        Assert.InRange(data.Count, 14_000, 14_042); // 14,042 minus the contaminated ones
        Assert.Contains(data, d => d.Category == "anatomy" && d.Prompt.Contains("stylomastoid foramen"));
    }

    [Fact]
    public void Apgr_of_a_perfect_ranking_beats_random_and_a_reversed_one_loses()
    {
        var test = new[]
        {
            new LabeledPrompt("a", "x", WeakCorrect: false, StrongCorrect: true),
            new LabeledPrompt("b", "x", WeakCorrect: true, StrongCorrect: true),
            new LabeledPrompt("c", "x", WeakCorrect: false, StrongCorrect: true),
            new LabeledPrompt("d", "x", WeakCorrect: true, StrongCorrect: true),
        };
        var good = RoutingEvaluation.Evaluate("good", test, [1, 0, 1, 0]);
        var bad = RoutingEvaluation.Evaluate("bad", test, [0, 1, 0, 1]);
        Assert.InRange(good.Apgr, 0.62, 0.63); // PGR 0 for c < 1/4, 0.5 up to 1/2, then 1 (on a 201-point grid)
        Assert.True(bad.Apgr < 0.2, $"{bad.Apgr}");
        Assert.Equal(0.25, good.Cpt50!.Value, 2); // one of the two gainful prompts recovers half the gap
        Assert.Equal(0.5, good.QualityWeak);
        Assert.Equal(1.0, good.QualityStrong);
    }

    [Fact]
    public void The_learned_router_meets_the_mmlu_bar_on_the_held_out_half()
    {
        var result = RoutingEvaluation.Run(RoutingDataset.Load(SharedData.Path("routing", "mmlu")));
        var learned = result.Routers[0];
        Assert.True(learned.Apgr >= 0.68, $"APGR {learned.Apgr:F3}");
        Assert.True(learned.Apgr > result.Routers.Single(r => r.Router == "prompt length").Apgr);
    }

    [Fact]
    public void A_trained_router_survives_a_save_and_load()
    {
        var data = RoutingDataset.Load(SharedData.Path("routing", "gsm8k"));
        var router = ComplexityRouter.TrainDense(data.Take(200).ToArray(), epochs: 5);
        var path = Path.Combine(Path.GetTempPath(), "router-" + Guid.NewGuid().ToString("N") + ".json");
        router.Save(path);
        var loaded = ComplexityRouter.Load(path);
        Assert.Equal(router.Score(data[300].Prompt, data[300].Category), loaded.Score(data[300].Prompt, data[300].Category), 12);
        File.Delete(path);
    }
}

public sealed class WhatIfExampleTests
{
    [Fact]
    public void The_worked_example_of_LEVERS_md_is_reproduced_within_2_percent_per_step()
    {
        var ladder = Bursar.Core.Advisor.WhatIfSimulator.Example();
        Assert.Equal(5000m, ladder.BaselineMonthly);
        decimal[] levers = [3800m, 1700m, 1050m, 880m, 620m]; // LEVERS.md: output cap, tier routing, prompt caching, batch, tighter context
        Assert.Equal(levers.Length, ladder.Steps.Count);
        for (var i = 0; i < levers.Length; i++) Assert.InRange(ladder.Steps[i].MonthlyCost, levers[i] * 0.98m, levers[i] * 1.02m);
        Assert.InRange(ladder.Steps[^1].CumulativeShare, 0.87m, 0.89m); // "88% saved"
        Assert.Contains("tier routing", ladder.ToTable());
    }

    [Fact]
    public void Below_a_thousand_requests_a_day_the_advisor_says_it_is_not_worth_it()
    {
        var t0 = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var records = Enumerable.Range(0, 300).Select(i => new Bursar.Core.Ledger.LedgerRecord
        {
            Id = i.ToString(System.Globalization.CultureInfo.InvariantCulture), Timestamp = t0.AddMinutes(i * 10), Dialect = "openai", Outcome = "ok",
            ServedModel = "gpt-4.1", Task = "classification", InputTokens = 500, OutputTokens = i % 20 == 0 ? 400 : 20, Priced = true,
        }).ToArray();
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        var ladder = Bursar.Core.Advisor.WhatIfSimulator.Run(records, catalog, new Bursar.Core.Advisor.WhatIfAssumptions(), t0, t0.AddDays(3));
        Assert.False(ladder.WorthIt);
        Assert.Contains("Meter first, optimize later", ladder.ToTable());
        // 100 calls a day, scaled to 30 days; caps cut the 15 verbose calls; classification routes to gpt-4.1-nano
        Assert.Equal(100, ladder.RequestsPerDay, 6);
        Assert.True(ladder.Steps[0].MonthlyCost < ladder.BaselineMonthly);
        Assert.Contains("classification -> gpt-4.1-nano", ladder.Steps[1].Assumption);
    }

    [Fact]
    public void A_ladder_route_is_replayed_with_its_calibrated_shares()
    {
        var t0 = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var records = Enumerable.Range(0, 2000).Select(i => new Bursar.Core.Ledger.LedgerRecord
        {
            Id = "call" + i, Timestamp = t0.AddMinutes(i), Dialect = "openai", Outcome = "ok", Feature = "support",
            RequestedModel = "gpt-4.1", ServedModel = "gpt-4.1", InputTokens = 1000, OutputTokens = 100, Priced = true,
        }).ToArray();
        var routes = new Bursar.Core.Routing.RoutingOptions { Routes = [new Bursar.Core.Routing.RoutePolicy { Name = "support", Feature = "support", Ladder = ["gpt-4.1-nano", "gpt-4.1"], StrongShare = 0.3, ConfidenceMargin = 0 }] };
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        var ladder = Bursar.Core.Advisor.WhatIfSimulator.Run(records, catalog, new Bursar.Core.Advisor.WhatIfAssumptions { Routes = routes }, t0, t0.AddDays(2));
        // 70% of calls to nano ($0.10/$0.40) and 30% stay on gpt-4.1 ($2/$8): 0.7 x 0.05 + 0.3 = 0.335 of the bill
        var share = ladder.Steps[1].WindowCost / ladder.Steps[0].WindowCost;
        Assert.InRange(share, 0.30m, 0.37m);
        Assert.Contains("support -> gpt-4.1-nano", ladder.Steps[1].Assumption);
    }
}
