using System.Text.Json;
using System.Text.RegularExpressions;

namespace Bursar.Core.Routing;

/// <summary>
/// A cheap local classifier over request features that returns P(the request needs the strong model): logistic
/// regression over prompt length, numbers, code, math, question shape, turns and a per-category prior (the category is
/// the task tag in production, the subject in MMLU). Trained offline (<c>bursar train-router</c>), loaded from a file.
/// </summary>
public sealed partial class ComplexityRouter
{
    public const int FeatureCount = 12;

    public double[] Weights { get; init; } = new double[FeatureCount + 1];
    /// <summary>Log-odds that the weak model fails, per category, learned with Laplace smoothing.</summary>
    public Dictionary<string, double> CategoryPrior { get; init; } = new(StringComparer.Ordinal);
    public double GlobalPrior { get; init; }
    /// <summary>101 quantiles (0%, 1%, ... 100%) of the training scores: the calibration that turns a target share of strong-model calls into a threshold.</summary>
    public double[] ScoreQuantiles { get; init; } = [];

    /// <summary>The score above which the top <paramref name="strongShare"/> of calls (as in training) go to the strong model.</summary>
    public double ThresholdFor(double strongShare) => ScoreQuantiles.Length == 0 ? 0.5 : QuantileValue(1 - Math.Clamp(strongShare, 0, 1));

    /// <summary>Where a score falls in the training distribution, 0..1.</summary>
    public double QuantileOf(double score)
    {
        if (ScoreQuantiles.Length == 0) return score;
        var i = Array.BinarySearch(ScoreQuantiles, score);
        if (i >= 0) return i / (double)(ScoreQuantiles.Length - 1);
        i = ~i;
        if (i == 0) return 0;
        if (i >= ScoreQuantiles.Length) return 1;
        var lo = ScoreQuantiles[i - 1];
        var hi = ScoreQuantiles[i];
        return (i - 1 + (hi > lo ? (score - lo) / (hi - lo) : 0)) / (ScoreQuantiles.Length - 1);
    }

    private double QuantileValue(double q)
    {
        var x = q * (ScoreQuantiles.Length - 1);
        var i = (int)Math.Floor(x);
        if (i >= ScoreQuantiles.Length - 1) return ScoreQuantiles[^1];
        return ScoreQuantiles[i] + (ScoreQuantiles[i + 1] - ScoreQuantiles[i]) * (x - i);
    }

    /// <summary>Records the score distribution of <paramref name="data"/> as the calibration.</summary>
    public ComplexityRouter Calibrated(IReadOnlyList<LabeledPrompt> data)
    {
        var scores = data.Select(d => Score(d.Prompt, d.Category)).Order().ToArray();
        var q = new double[101];
        for (var i = 0; i <= 100; i++) q[i] = scores.Length == 0 ? 0.5 : scores[(int)Math.Round(i / 100.0 * (scores.Length - 1))];
        return new ComplexityRouter { Weights = Weights, CategoryPrior = CategoryPrior, GlobalPrior = GlobalPrior, ScoreQuantiles = q };
    }

    /// <summary>The router shipped with Bursar: trained on RouteLLM's MMLU and GSM8K labels (contaminated prompts dropped).</summary>
    public static ComplexityRouter Default { get; } = LoadDefault();

    private static ComplexityRouter LoadDefault()
    {
        using var s = typeof(ComplexityRouter).Assembly.GetManifestResourceStream("Bursar.Core.Routing.default-router.json");
        return s is null ? new ComplexityRouter() : Parse(JsonDocument.Parse(s));
    }

    [GeneratedRegex(@"\d+(?:[.,]\d+)?")] private static partial Regex Numbers();
    [GeneratedRegex(@"[=+\-*/^%]|\bsqrt\b|\bfrac\b|\\\(|\$")] private static partial Regex MathSymbols();
    [GeneratedRegex(@"```|\bdef \b|\bclass \b|\breturn\b|;\s*$|\{\s*$|=>", RegexOptions.Multiline)] private static partial Regex Code();
    [GeneratedRegex(@"\b(?:why|how|explain|prove|derive|compare|analy[sz]e)\b", RegexOptions.IgnoreCase)] private static partial Regex Reasoning();
    [GeneratedRegex(@"\b(?:percent|%|fraction|ratio|average|rate|each|per|times|twice|half|total|remaining|left)\b", RegexOptions.IgnoreCase)] private static partial Regex QuantityWords();

    public double[] Features(string prompt, string? category, int turns = 1)
    {
        var f = new double[FeatureCount];
        var numbers = Numbers().Matches(prompt).Count;
        f[0] = Math.Log(1 + prompt.Length) / 8;
        f[1] = Math.Log(1 + numbers) / 3;
        f[2] = Math.Log(1 + MathSymbols().Matches(prompt).Count) / 3;
        f[3] = Code().IsMatch(prompt) ? 1 : 0;
        f[4] = Reasoning().IsMatch(prompt) ? 1 : 0;
        f[5] = Math.Log(1 + QuantityWords().Matches(prompt).Count) / 3;
        f[6] = Math.Log(1 + prompt.Count(ch => ch is '.' or '?' or '!')) / 3;
        f[7] = Math.Log(1 + turns) / 3;
        f[8] = prompt.Contains("\nA.", StringComparison.Ordinal) ? 1 : 0; // multiple choice
        f[9] = category is not null && CategoryPrior.TryGetValue(category, out var p) ? p : GlobalPrior;
        f[10] = Math.Log(1 + prompt.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Average(w => (double)w.Length)) / 3;
        f[11] = numbers > 0 ? Math.Log(1 + Numbers().Matches(prompt).Max(m => m.Value.Length)) / 3 : 0;
        return f;
    }

    /// <summary>P(needs the strong model).</summary>
    public double Score(string prompt, string? category, int turns = 1)
    {
        var f = Features(prompt, category, turns);
        var z = Weights[FeatureCount];
        for (var i = 0; i < FeatureCount; i++) z += Weights[i] * f[i];
        return 1 / (1 + Math.Exp(-z));
    }

    /// <summary>The label routing can gain from: the strong model got it right and the weak one did not.</summary>
    public static bool Gains(LabeledPrompt p) => p.StrongCorrect && !p.WeakCorrect;

    /// <summary>Fits the category prior and the logistic weights on labeled prompts (label: routing to the strong model gains).</summary>
    public static ComplexityRouter Train(IReadOnlyList<LabeledPrompt> data, int epochs = 60, double learningRate = 0.1, double l2 = 1e-4)
    {
        var wrong = data.Count(Gains);
        var global = Math.Log((wrong + 1.0) / (data.Count - wrong + 1.0));
        var prior = data.GroupBy(d => d.Category).ToDictionary(g => g.Key, g =>
        {
            // shrink small categories toward the global rate
            var w = g.Count(Gains);
            return Math.Log((w + 5 * Sigmoid(global)) / (g.Count() - w + 5 * (1 - Sigmoid(global))));
        }, StringComparer.Ordinal);
        var router = new ComplexityRouter { CategoryPrior = prior, GlobalPrior = global };
        var xs = data.Select(d => router.Features(d.Prompt, d.Category)).ToArray();
        var ys = data.Select(d => Gains(d) ? 1.0 : 0.0).ToArray();
        var w8 = router.Weights;
        var order = Enumerable.Range(0, xs.Length).ToArray();
        var rng = new Random(5);
        for (var e = 0; e < epochs; e++)
        {
            rng.Shuffle(order);
            var lr = learningRate / (1 + e * 0.1);
            foreach (var i in order)
            {
                var z = w8[FeatureCount];
                for (var k = 0; k < FeatureCount; k++) z += w8[k] * xs[i][k];
                var g = Sigmoid(z) - ys[i];
                for (var k = 0; k < FeatureCount; k++) w8[k] -= lr * (g * xs[i][k] + l2 * w8[k]);
                w8[FeatureCount] -= lr * g;
            }
        }
        return router;
    }

    private static double Sigmoid(double z) => 1 / (1 + Math.Exp(-z));

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(
        new { format = "bursar-complexity-router/1", weights = Weights, category_prior = CategoryPrior, global_prior = GlobalPrior, score_quantiles = ScoreQuantiles },
        new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>Loads a model file written by <c>bursar train-router</c>; throws naming the file and what is wrong with it.</summary>
    public static ComplexityRouter Load(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return Parse(doc);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"Router model file '{path}' is not a bursar train-router model: {e.Message}", e);
        }
    }

    private static ComplexityRouter Parse(JsonDocument doc)
    {
        var r = doc.RootElement;
        var router = new ComplexityRouter
        {
            Weights = r.GetProperty("weights").EnumerateArray().Select(x => x.GetDouble()).ToArray(),
            CategoryPrior = r.GetProperty("category_prior").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble(), StringComparer.Ordinal),
            GlobalPrior = r.GetProperty("global_prior").GetDouble(),
            ScoreQuantiles = r.TryGetProperty("score_quantiles", out var q) ? q.EnumerateArray().Select(x => x.GetDouble()).ToArray() : [],
        };
        if (router.Weights.Length != FeatureCount + 1) throw new FormatException($"expected {FeatureCount + 1} weights, found {router.Weights.Length}");
        return router;
    }
}
