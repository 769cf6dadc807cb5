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
        return new ComplexityRouter
        {
            Weights = Weights, CategoryPrior = CategoryPrior, GlobalPrior = GlobalPrior, ScoreQuantiles = q,
            TextWeights = TextWeights, TextBias = TextBias, TextShare = TextShare, DenseSpread = DenseSpread, TextSpread = TextSpread,
        };
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

    /// <summary>Hashed word unigrams and bigrams (numbers by their length): the text model's sparse features.</summary>
    public const int TextBuckets = 16384;

    /// <summary>The text model: a weight per bucket and a bias (empty when the router has none).</summary>
    public double[] TextWeights { get; init; } = [];
    public double TextBias { get; init; }
    /// <summary>How much the text model counts beside the dense one (chosen by cross-validation when training; 0 = dense only).</summary>
    public double TextShare { get; init; }
    /// <summary>Spreads of the two models' logits on the training data, so that <see cref="TextShare"/> weighs like against like.</summary>
    public double DenseSpread { get; init; } = 1;
    public double TextSpread { get; init; } = 1;

    /// <summary>The distinct buckets of a prompt (allocates; training). The request path uses the span overload.</summary>
    public static int[] TextFeatures(string prompt)
    {
        var buffer = System.Buffers.ArrayPool<int>.Shared.Rent(TextBuckets);
        try { return buffer.AsSpan(0, TextFeatures(prompt, buffer)).ToArray(); }
        finally { System.Buffers.ArrayPool<int>.Shared.Return(buffer); }
    }

    /// <summary>
    /// Writes the distinct buckets of the prompt's tokens and token bigrams into <paramref name="output"/> (room for <see cref="TextBuckets"/>) and
    /// returns how many. Tokens: runs of ASCII letters (lowercased, at most 60), runs of digits (as &lt;numN&gt;, N their length up to 4), and $ % /.
    /// No allocation: bytes are hashed from stack buffers.
    /// </summary>
    public static int TextFeatures(ReadOnlySpan<char> prompt, Span<int> output)
    {
        Span<ulong> seen = stackalloc ulong[TextBuckets / 64];
        Span<byte> pair = stackalloc byte[2 * MaxToken + 1];
        Span<byte> token = stackalloc byte[MaxToken];
        var previous = 0; // length of the previous token, kept at the start of pair
        var count = 0;
        var i = 0;
        while (i < prompt.Length)
        {
            var c = prompt[i];
            int length;
            if (char.IsAsciiLetter(c))
            {
                length = 0;
                while (i < prompt.Length && char.IsAsciiLetter(prompt[i]))
                {
                    if (length < MaxToken) token[length++] = (byte)(prompt[i] | 0x20);
                    i++;
                }
            }
            else if (char.IsDigit(c))
            {
                var digits = 0;
                while (i < prompt.Length && char.IsDigit(prompt[i])) { digits++; i++; }
                "<num"u8.CopyTo(token);
                token[4] = (byte)('0' + Math.Min(digits, 4));
                token[5] = (byte)'>';
                length = 6;
            }
            else if (c is '$' or '%' or '/')
            {
                token[0] = (byte)c;
                length = 1;
                i++;
            }
            else
            {
                i++;
                continue;
            }
            Add(System.IO.Hashing.XxHash32.HashToUInt32(token[..length]), seen, output, ref count);
            if (previous > 0)
            {
                pair[previous] = (byte)' ';
                token[..length].CopyTo(pair[(previous + 1)..]);
                Add(System.IO.Hashing.XxHash32.HashToUInt32(pair[..(previous + 1 + length)]), seen, output, ref count);
            }
            token[..length].CopyTo(pair);
            previous = length;
        }
        return count;

        static void Add(uint hash, Span<ulong> seen, Span<int> output, ref int count)
        {
            var bucket = (int)(hash % TextBuckets);
            ref var word = ref seen[bucket >> 6];
            var bit = 1UL << (bucket & 63);
            if ((word & bit) != 0 || count >= output.Length) return;
            word |= bit;
            output[count++] = bucket;
        }
    }

    private const int MaxToken = 60;

    private double DenseLogit(string prompt, string? category, int turns)
    {
        var f = Features(prompt, category, turns);
        var z = Weights[FeatureCount];
        for (var i = 0; i < FeatureCount; i++) z += Weights[i] * f[i];
        return z;
    }

    private double TextLogit(string prompt)
    {
        var buffer = System.Buffers.ArrayPool<int>.Shared.Rent(TextBuckets);
        try
        {
            var n = TextFeatures(prompt, buffer);
            var z = TextBias;
            for (var i = 0; i < n; i++) z += TextWeights[buffer[i]];
            return z;
        }
        finally { System.Buffers.ArrayPool<int>.Shared.Return(buffer); }
    }

    /// <summary>The routing score, higher = more likely to need the strong model: the dense logit plus, when trained, the text model's (scaled).</summary>
    public double Score(string prompt, string? category, int turns = 1)
    {
        var z = DenseLogit(prompt, category, turns);
        if (TextShare > 0 && TextWeights.Length == TextBuckets) z = z / DenseSpread + TextShare * TextLogit(prompt) / TextSpread;
        return 1 / (1 + Math.Exp(-z));
    }

    /// <summary>The label routing can gain from: the strong model got it right and the weak one did not.</summary>
    public static bool Gains(LabeledPrompt p) => p.StrongCorrect && !p.WeakCorrect;

    /// <summary>Candidate weights of the text model beside the dense one; 3-fold cross-validation on the training data picks one.</summary>
    public static readonly double[] TextShares = [0, 0.5, 1, 2, 4, 8];

    /// <summary>
    /// Trains the dense model and the text model on <paramref name="data"/>, and weighs them by the share 3-fold cross-validation on the same data
    /// finds best (held-out APGR): no test data is looked at.
    /// </summary>
    public static ComplexityRouter Train(IReadOnlyList<LabeledPrompt> data)
    {
        var dense = TrainDense(data);
        if (data.Count < 300) return dense;
        var totals = new double[TextShares.Length];
        foreach (var fold in Enumerable.Range(0, 3))
        {
            var train = data.Where((_, i) => i % 3 != fold).ToArray();
            var held = data.Where((_, i) => i % 3 == fold).ToArray();
            var d = TrainDense(train);
            for (var j = 0; j < TextShares.Length; j++)
            {
                var r = WithText(d, train, TextShares[j]);
                totals[j] += RoutingEvaluation.Evaluate("cv", held, held.Select(p => r.Score(p.Prompt, p.Category)).ToArray()).Apgr;
            }
        }
        var best = TextShares[Array.IndexOf(totals, totals.Max())];
        return WithText(dense, data, best);
    }

    /// <summary>The dense router plus a text model fitted on <paramref name="data"/> and weighed by <paramref name="share"/>.</summary>
    private static ComplexityRouter WithText(ComplexityRouter dense, IReadOnlyList<LabeledPrompt> data, double share)
    {
        if (share == 0) return dense;
        var (weights, bias) = TrainText(data);
        static double Spread(IEnumerable<double> v) { var a = v.ToArray(); var m = a.Average(); return Math.Sqrt(a.Average(x => (x - m) * (x - m))) + 1e-9; }
        var router = new ComplexityRouter
        {
            Weights = dense.Weights, CategoryPrior = dense.CategoryPrior, GlobalPrior = dense.GlobalPrior,
            TextWeights = weights, TextBias = bias, TextShare = share,
        };
        return new ComplexityRouter
        {
            Weights = dense.Weights, CategoryPrior = dense.CategoryPrior, GlobalPrior = dense.GlobalPrior,
            TextWeights = weights, TextBias = bias, TextShare = share,
            DenseSpread = Spread(data.Select(p => router.DenseLogit(p.Prompt, p.Category, 1))),
            TextSpread = Spread(data.Select(p => router.TextLogit(p.Prompt))),
        };
    }

    /// <summary>Logistic regression on the hashed text features (label: routing gains), SGD with L2 weight decay (applied lazily through a scale).</summary>
    private static (double[] Weights, double Bias) TrainText(IReadOnlyList<LabeledPrompt> data, double l2 = 0.06, int epochs = 15)
    {
        var xs = data.Select(d => TextFeatures(d.Prompt)).ToArray();
        var ys = data.Select(d => Gains(d) ? 1.0 : 0.0).ToArray();
        var w = new double[TextBuckets];
        double bias = 0, scale = 1;
        var order = Enumerable.Range(0, xs.Length).ToArray();
        var rng = new Random(1);
        for (var e = 0; e < epochs; e++)
        {
            rng.Shuffle(order);
            var lr = 0.05 / (1 + e * 0.1);
            foreach (var i in order)
            {
                var z = bias;
                foreach (var k in xs[i]) z += w[k] * scale;
                var g = Sigmoid(z) - ys[i];
                scale *= 1 - lr * l2; // every weight decays; the scale carries it without touching all of them
                foreach (var k in xs[i]) w[k] -= lr * g / scale;
                bias -= lr * g;
                if (scale < 1e-6)
                {
                    for (var k = 0; k < w.Length; k++) w[k] *= scale;
                    scale = 1;
                }
            }
        }
        for (var k = 0; k < w.Length; k++) w[k] *= scale;
        return (w, bias);
    }

    /// <summary>Fits the category prior and the logistic weights of the dense features (label: routing to the strong model gains).</summary>
    public static ComplexityRouter TrainDense(IReadOnlyList<LabeledPrompt> data, int epochs = 60, double learningRate = 0.1, double l2 = 1e-4)
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
        new
        {
            format = "bursar-complexity-router/2", weights = Weights, category_prior = CategoryPrior, global_prior = GlobalPrior, score_quantiles = ScoreQuantiles,
            text_share = TextShare, dense_spread = DenseSpread, text_spread = TextSpread, text_bias = TextBias,
            text_weights = TextShare > 0 ? TextWeights : [],
        },
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
            TextWeights = r.TryGetProperty("text_weights", out var tw) ? tw.EnumerateArray().Select(x => x.GetDouble()).ToArray() : [],
            TextShare = r.TryGetProperty("text_share", out var ts) ? ts.GetDouble() : 0,
            TextBias = r.TryGetProperty("text_bias", out var tb) ? tb.GetDouble() : 0,
            DenseSpread = r.TryGetProperty("dense_spread", out var ds) ? ds.GetDouble() : 1,
            TextSpread = r.TryGetProperty("text_spread", out var tsp) ? tsp.GetDouble() : 1,
        };
        if (router.TextShare > 0 && router.TextWeights.Length != TextBuckets) throw new FormatException($"expected {TextBuckets} text weights, found {router.TextWeights.Length}");
        if (router.Weights.Length != FeatureCount + 1) throw new FormatException($"expected {FeatureCount + 1} weights, found {router.Weights.Length}");
        return router;
    }
}
