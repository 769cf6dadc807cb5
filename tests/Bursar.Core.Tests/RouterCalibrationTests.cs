using Bursar.Core.Routing;

namespace Bursar.Core.Tests;

public sealed class RouterCalibrationTests
{
    private static IReadOnlyList<LabeledPrompt> Gsm8k() => RoutingDataset.Load(SharedData.Path("routing", "gsm8k"));

    [Fact]
    public void A_calibrated_strong_share_sends_that_share_of_similar_traffic_to_the_strong_model()
    {
        var data = Gsm8k();
        var half = data.Count / 2;
        var router = ComplexityRouter.Train(data.Take(half).ToArray()).Calibrated(data.Take(half).ToArray());
        var route = new RoutePolicy { Name = "r", Ladder = ["weak", "strong"], StrongShare = 0.3, ConfidenceMargin = 0 };
        // on held-out prompts of the same kind, the share sent up is close to the target
        var up = data.Skip(half).Count(p => route.Rung(router.QuantileOf(router.Score(p.Prompt, p.Category))).Model == "strong") / (double)(data.Count - half);
        Assert.InRange(up, 0.24, 0.36);
        Assert.True(router.ThresholdFor(0.3) > router.ThresholdFor(0.6));
    }

    [Fact]
    public void Rungs_split_below_the_strong_share_and_low_confidence_goes_up()
    {
        var three = new RoutePolicy { Name = "r", Ladder = ["nano", "mini", "full"], StrongShare = 0.2, ConfidenceMargin = 0 };
        Assert.Equal("nano", three.Rung(0.10).Model);
        Assert.Equal("mini", three.Rung(0.50).Model);
        Assert.Equal("full", three.Rung(0.85).Model);
        var careful = new RoutePolicy { Name = "r", Ladder = ["nano", "mini", "full"], StrongShare = 0.2, ConfidenceMargin = 0.05 };
        Assert.Equal(("mini", true), careful.Rung(0.38)); // just under the nano/mini boundary at 0.40
        Assert.Equal(("full", true), careful.Rung(0.78)); // just under the top boundary at 0.80
        Assert.Equal(("nano", false), careful.Rung(0.20));
    }

    [Fact]
    public void A_model_file_round_trips_and_a_bad_one_is_named()
    {
        var dir = Directory.CreateTempSubdirectory("bursar-router-");
        try
        {
            var data = Gsm8k().Take(300).ToArray();
            var router = ComplexityRouter.Train(data).Calibrated(data);
            var file = Path.Combine(dir.FullName, "router.json");
            router.Save(file);
            var loaded = ComplexityRouter.Load(file);
            Assert.Equal(router.Score(data[0].Prompt, "math"), loaded.Score(data[0].Prompt, "math"), 12);
            Assert.Equal(router.ThresholdFor(0.5), loaded.ThresholdFor(0.5), 12);
            var bad = Path.Combine(dir.FullName, "bad.json");
            File.WriteAllText(bad, """{"weights": [1, 2]}""");
            var e = Assert.Throws<InvalidDataException>(() => ComplexityRouter.Load(bad));
            Assert.Contains("bad.json", e.Message);
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void The_shipped_router_is_calibrated_and_separates_easy_from_hard_categories()
    {
        var r = ComplexityRouter.Default;
        Assert.Equal(101, r.ScoreQuantiles.Length);
        var easy = r.QuantileOf(r.Score("What is the capital of France?", "high_school_geography"));
        var hard = r.QuantileOf(r.Score("If 3 pencils cost $1.20 and each pen costs twice as much, what do 4 pens and 5 pencils cost?", "math"));
        Assert.True(easy < 0.3 && hard > 0.7, $"easy {easy:F2}, hard {hard:F2}");
    }

    [Fact]
    public void Route_validation_names_the_route_and_field()
    {
        var both = new RoutingOptions { Routes = [new RoutePolicy { Name = "x", Model = "a", Ladder = ["a", "b"] }] };
        Assert.Contains("route 'x' sets both Model and Ladder", Assert.Throws<InvalidOperationException>(() => both.Validate()).Message);
        var unserved = new RoutingOptions { Routes = [new RoutePolicy { Name = "y", Fallbacks = ["nowhere-model"] }] };
        Assert.Contains("Fallbacks 'nowhere-model' (route 'y')", Assert.Throws<InvalidOperationException>(() => unserved.Validate(m => m != "nowhere-model")).Message);
        var share = new RoutingOptions { Routes = [new RoutePolicy { Name = "z", Ladder = ["a", "b"], StrongShare = 1.5 }] };
        Assert.Contains("StrongShare", Assert.Throws<InvalidOperationException>(() => share.Validate()).Message);
    }
}

public sealed class OutputCapLearnerTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);

    private static Bursar.Core.Ledger.LedgerRecord Call(int i, long output, string? finish = "stop", int minutes = 0) => new()
    {
        Id = Guid.NewGuid().ToString("N"), Timestamp = T0.AddMinutes(i + minutes), Dialect = "openai", Outcome = "ok", Route = "summaries",
        OutputTokens = output, FinishReason = finish,
    };

    [Fact]
    public void The_cap_is_p95_plus_ten_percent_and_a_cap_that_truncates_too_often_is_raised()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(T0.AddMinutes(150)); // the history below is older than the cap it teaches
        var route = new RoutePolicy { Name = "summaries", LearnMaxTokens = true, MaxTokens = 1000, MaxTruncationRate = 0.05 };
        var learner = new OutputCapLearner(new RoutingOptions { Routes = [route] }, time);
        Assert.Equal(1000, learner.CapFor(route)); // no data yet: the fixed cap
        var history = Enumerable.Range(0, 100).Select(i => Call(i, 100 + i)).ToList(); // 100..199 tokens
        learner.Recompute(history.Take(10)); // too few calls to learn from
        Assert.Equal(1000, learner.CapFor(route));
        var learned = Assert.Single(learner.Recompute(history));
        Assert.Equal(194, learned.P95); // nearest rank: the 95th of 100
        Assert.Equal(214, learner.CapFor(route)); // ceil(194 x 1.1)

        // under the new cap, 10% of calls stop at the limit: more than the 5% allowed, so the cap goes up by half
        time.Advance(TimeSpan.FromHours(3));
        var capped = Enumerable.Range(0, 40).Select(i => Call(i, i % 10 == 0 ? 214 : 150, i % 10 == 0 ? "length" : "stop", minutes: 200)).ToList();
        var raised = Assert.Single(learner.Recompute(history.Concat(capped)));
        Assert.Equal(321, raised.Cap); // ceil(214 x 1.5)
        Assert.Contains("raised from 214", raised.Why);
        // and it is not learned back down below the raise while the data still holds the truncated calls
        time.Advance(TimeSpan.FromHours(1));
        learner.Recompute(history.Concat(capped));
        Assert.True(learner.CapFor(route) >= 321);
    }
}
