using System.IO.Compression;
using System.Numerics.Tensors;
using System.Text.Json;

namespace Bursar.Core.Caching.Semantic;

/// <summary>A labeled pair: would serving <see cref="B"/>'s cached answer for <see cref="A"/> be right?</summary>
public readonly record struct LabeledPair(string A, string B, bool Duplicate);

/// <summary>Precision, recall and false-positive rate of "similarity &gt;= threshold and the guards pass".</summary>
public readonly record struct ThresholdMetrics(float Threshold, double Precision, double Recall, double FalsePositiveRate, int TruePositives, int FalsePositives);

public sealed record EvaluationResult(int CalibrationPairs, int TestPairs, IReadOnlyList<ThresholdMetrics> Calibration, ThresholdMetrics? Chosen, ThresholdMetrics? Test, double TargetPrecision, int GuardRejections)
{
    /// <summary>The held-out half at every threshold (for reading, not for choosing).</summary>
    public IReadOnlyList<ThresholdMetrics> TestCurve { get; init; } = [];
}

/// <summary>
/// Calibrates and measures the semantic cache on labeled pairs: fits the generator's IDF on one half, picks the lowest
/// threshold whose precision on that half meets the target, and reports precision, recall and false-positive rate on the
/// other, disjoint half. <c>bursar eval semantic-cache</c> prints it.
/// </summary>
public static class SemanticCacheEvaluation
{
    public static IReadOnlyList<LabeledPair> Load(string path)
    {
        Stream s = File.OpenRead(path);
        if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) s = new GZipStream(s, CompressionMode.Decompress);
        using var reader = new StreamReader(s);
        var first = (char)reader.Peek();
        var pairs = new List<LabeledPair>();
        if (first == '[')
        {
            // GPTCache paraphrase file: [{origin, similar}] (all duplicates); negatives pair an origin with another row's paraphrase
            using var doc = JsonDocument.Parse(reader.ReadToEnd());
            var rows = doc.RootElement.EnumerateArray().Select(e => (e.GetProperty("origin").GetString()!, e.GetProperty("similar").GetString()!)).ToArray();
            for (var i = 0; i < rows.Length; i++)
            {
                pairs.Add(new LabeledPair(rows[i].Item1, rows[i].Item2, true));
                pairs.Add(new LabeledPair(rows[i].Item1, rows[(i + rows.Length / 2) % rows.Length].Item2, false));
            }
            return pairs;
        }
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0) continue;
            using var d = JsonDocument.Parse(line);
            var r = d.RootElement;
            pairs.Add(new LabeledPair(r.GetProperty("a").GetString() ?? "", r.GetProperty("b").GetString() ?? "", r.GetProperty("duplicate").GetInt32() == 1));
        }
        return pairs;
    }

    public static EvaluationResult Run(IReadOnlyList<LabeledPair> pairs, double targetPrecision = 0.95, int seed = 17, IProgress<int>? progress = null, bool fitIdf = false, Func<string, float[]>? embed = null)
    {
        var order = Enumerable.Range(0, pairs.Count).ToArray();
        new Random(seed).Shuffle(order);
        var calibration = order.Take(pairs.Count / 2).Select(i => pairs[i]).ToArray();
        var test = order.Skip(pairs.Count / 2).Select(i => pairs[i]).ToArray();
        var generator = new HashedNGramEmbeddingGenerator();
        // the gateway's generator has no corpus to fit, so by default neither has the evaluation: thresholds carry over
        if (fitIdf) generator.Fit(calibration.SelectMany(p => new[] { p.A, p.B }));
        // another generator (an ONNX encoder) can be measured the same way: it must return normalized vectors
        embed ??= generator.Embed;
        var guardRejections = 0;
        (float Score, bool Guarded, bool Dup)[] Score(LabeledPair[] set, int offset)
        {
            var result = new (float, bool, bool)[set.Length];
            Parallel.For(0, set.Length, i =>
            {
                var p = set[i];
                var score = TensorPrimitives.Dot(embed(p.A), embed(p.B));
                var ok = SemanticGuards.Compatible(p.A, p.B, out _);
                if (!ok) Interlocked.Increment(ref guardRejections);
                result[i] = (score, ok, p.Duplicate);
                if (i % 5000 == 0) progress?.Report(offset + i);
            });
            return result;
        }
        var cal = Score(calibration, 0);
        var tst = Score(test, calibration.Length);
        var thresholds = Enumerable.Range(0, 100).Select(i => 0.50f + i * 0.005f).ToArray();
        var calMetrics = thresholds.Select(t => Metrics(cal, t)).ToArray();
        ThresholdMetrics? chosen = calMetrics.Where(m => m.TruePositives + m.FalsePositives >= 20 && m.Precision >= targetPrecision).Select(m => (ThresholdMetrics?)m).FirstOrDefault();
        ThresholdMetrics? onTest = chosen is { } c ? Metrics(tst, c.Threshold) : null;
        return new EvaluationResult(calibration.Length, test.Length, calMetrics, chosen, onTest, targetPrecision, guardRejections)
        {
            TestCurve = thresholds.Select(t => Metrics(tst, t)).ToArray(),
        };
    }

    private static ThresholdMetrics Metrics((float Score, bool Guarded, bool Dup)[] scored, float threshold)
    {
        int tp = 0, fp = 0, fn = 0, tn = 0;
        foreach (var (score, guardOk, dup) in scored)
        {
            var hit = score >= threshold && guardOk;
            if (hit && dup) tp++;
            else if (hit) fp++;
            else if (dup) fn++;
            else tn++;
        }
        return new ThresholdMetrics(threshold, tp + fp == 0 ? 1 : (double)tp / (tp + fp), tp + fn == 0 ? 0 : (double)tp / (tp + fn), fp + tn == 0 ? 0 : (double)fp / (fp + tn), tp, fp);
    }
}
