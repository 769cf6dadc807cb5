namespace Bursar.Core.Routing;

/// <summary>RouteLLM's metrics for one router on one test set.</summary>
public sealed record RoutingMetrics(string Router, double Apgr, double? Cpt50, double? Cpt80, double QualityWeak, double QualityStrong);

public sealed record RoutingEvaluationResult(int Train, int Test, IReadOnlyList<RoutingMetrics> Routers, double CostSavedAt95Percent)
{
    /// <summary>The weight cross-validation on the training half gave the router's text model (0: dense features only).</summary>
    public double TextShare { get; init; }
}

/// <summary>
/// Replays labeled prompts through a router: train on one half, test on the other (disjoint), route the top c share of
/// scores to the strong model for c in [0, 1], and report APGR (mean performance gap recovered), CPT(50%) and CPT(80%)
/// (the smallest strong-call share reaching that PGR) against the random and oracle routers.
/// </summary>
public static class RoutingEvaluation
{
    public const int Steps = 200;

    public static RoutingEvaluationResult Run(IReadOnlyList<LabeledPrompt> data, decimal weakCostPerCall = 1m, decimal strongCostPerCall = 20m, int seed = 42)
    {
        var order = Enumerable.Range(0, data.Count).ToArray();
        new Random(seed).Shuffle(order);
        var train = order.Take(data.Count / 2).Select(i => data[i]).ToArray();
        var test = order.Skip(data.Count / 2).Select(i => data[i]).ToArray();
        var router = ComplexityRouter.Train(train);
        var learned = test.Select(t => router.Score(t.Prompt, t.Category)).ToArray();
        var oracle = test.Select(t => !t.WeakCorrect && t.StrongCorrect ? 1.0 : 0.0).ToArray();
        var lengthOnly = test.Select(t => (double)t.Prompt.Length).ToArray();
        var priorOnly = test.Select(t => router.CategoryPrior.TryGetValue(t.Category, out var p) ? p : router.GlobalPrior).ToArray();
        var m = new[]
        {
            Evaluate("bursar complexity router", test, learned),
            Evaluate("category prior only", test, priorOnly),
            Evaluate("prompt length", test, lengthOnly),
            Evaluate("oracle", test, oracle),
            new RoutingMetrics("random", 0.5, 0.5, 0.8, QualityOf(test, false), QualityOf(test, true)),
        };
        // cost at 95% of strong quality: the smallest strong share whose PGR reaches 95%
        var c95 = SmallestShare(test, learned, 0.95) ?? 1.0;
        var allStrong = strongCostPerCall * test.Length;
        var routed = (decimal)c95 * test.Length * strongCostPerCall + (decimal)(1 - c95) * test.Length * weakCostPerCall;
        return new RoutingEvaluationResult(train.Length, test.Length, m, (double)(1 - routed / allStrong)) { TextShare = router.TextShare };
    }

    private static double QualityOf(LabeledPrompt[] test, bool strong) => test.Average(t => (strong ? t.StrongCorrect : t.WeakCorrect) ? 1.0 : 0.0);

    private static double[] PgrCurve(LabeledPrompt[] test, double[] scores)
    {
        var ranked = Enumerable.Range(0, test.Length).OrderByDescending(i => scores[i]).ThenBy(i => i).ToArray();
        double qw = QualityOf(test, false), qs = QualityOf(test, true);
        var curve = new double[Steps + 1];
        // prefix: quality when the top k go to the strong model
        var weakCorrect = test.Sum(t => t.WeakCorrect ? 1 : 0);
        var prefix = new double[test.Length + 1];
        double correct = weakCorrect;
        prefix[0] = correct;
        for (var k = 0; k < test.Length; k++)
        {
            var t = test[ranked[k]];
            correct += (t.StrongCorrect ? 1 : 0) - (t.WeakCorrect ? 1 : 0);
            prefix[k + 1] = correct;
        }
        for (var s = 0; s <= Steps; s++)
        {
            var k = (int)Math.Floor((double)s / Steps * test.Length + 1e-9);
            curve[s] = (prefix[k] / test.Length - qw) / (qs - qw);
        }
        return curve;
    }

    public static RoutingMetrics Evaluate(string name, LabeledPrompt[] test, double[] scores)
    {
        var curve = PgrCurve(test, scores);
        var apgr = curve.Average();
        double? Cpt(double x) { for (var s = 0; s <= Steps; s++) if (curve[s] >= x) return (double)s / Steps; return null; }
        return new RoutingMetrics(name, apgr, Cpt(0.5), Cpt(0.8), QualityOf(test, false), QualityOf(test, true));
    }

    private static double? SmallestShare(LabeledPrompt[] test, double[] scores, double pgr)
    {
        var curve = PgrCurve(test, scores);
        for (var s = 0; s <= Steps; s++) if (curve[s] >= pgr) return (double)s / Steps;
        return null;
    }
}
