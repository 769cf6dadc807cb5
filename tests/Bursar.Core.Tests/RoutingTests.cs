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
        var router = ComplexityRouter.Train(data.Take(200).ToArray(), epochs: 5);
        var path = Path.Combine(Path.GetTempPath(), "router-" + Guid.NewGuid().ToString("N") + ".json");
        router.Save(path);
        var loaded = ComplexityRouter.Load(path);
        Assert.Equal(router.Score(data[300].Prompt, data[300].Category), loaded.Score(data[300].Prompt, data[300].Category), 12);
        File.Delete(path);
    }
}
