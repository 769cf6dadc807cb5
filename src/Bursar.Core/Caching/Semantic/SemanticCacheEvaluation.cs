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
    /// <summary>Per guard: the metrics at the chosen threshold with the evaluated guard set and with that guard left out, on both halves.</summary>
    public IReadOnlyList<GuardEffect> Guards { get; init; } = [];
    /// <summary>Held-out pairs labelled "not duplicate" that the cache would have served at the chosen threshold (a sample, highest score first).</summary>
    public IReadOnlyList<(string A, string B, float Score)> FalsePositives { get; init; } = [];
    /// <summary>Held-out duplicates the guards rejected although their score passed the threshold (a sample), and which guard.</summary>
    public IReadOnlyList<(string A, string B, string Guard)> GuardedDuplicates { get; init; } = [];
}

/// <summary>What one guard does at the chosen threshold: precision and recall with it and without it, on the calibration and held-out halves.</summary>
public readonly record struct GuardEffect(string Guard, ThresholdMetrics CalibrationWith, ThresholdMetrics CalibrationWithout, ThresholdMetrics TestWith, ThresholdMetrics TestWithout)
{
    /// <summary>The rule for keeping a guard: on the calibration half it raises precision by more than it costs recall.</summary>
    public bool Keep => CalibrationWith.Precision - CalibrationWithout.Precision > CalibrationWithout.Recall - CalibrationWith.Recall;
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

    /// <summary>
    /// Splits the pairs into two halves (seeded), scores each pair (cosine, and which guards reject it), chooses the lowest threshold
    /// whose calibration precision meets the target with the guards in <paramref name="guards"/> (a mask over
    /// <see cref="SemanticGuards.Names"/>), and measures it on the held-out half. <paramref name="embedBatch"/> (an ONNX encoder's
    /// batches) embeds every distinct text once, the shortest first, on every core; else <paramref name="embed"/>, else the local generator.
    /// </summary>
    public static EvaluationResult Run(IReadOnlyList<LabeledPair> pairs, double targetPrecision = 0.95, int seed = 17, IProgress<int>? progress = null, bool fitIdf = false,
        Func<string, float[]>? embed = null, Func<IReadOnlyList<string>, float[][]>? embedBatch = null, int guards = SemanticGuards.All)
    {
        var order = Enumerable.Range(0, pairs.Count).ToArray();
        new Random(seed).Shuffle(order);
        var calibration = order.Take(pairs.Count / 2).Select(i => pairs[i]).ToArray();
        var test = order.Skip(pairs.Count / 2).Select(i => pairs[i]).ToArray();
        var generator = new HashedNGramEmbeddingGenerator();
        // the gateway's generator has no corpus to fit, so by default neither has the evaluation: thresholds carry over
        if (fitIdf) generator.Fit(calibration.SelectMany(p => new[] { p.A, p.B }));
        if (embedBatch is not null)
        {
            var texts = pairs.SelectMany(p => new[] { p.A, p.B }).Distinct(StringComparer.Ordinal).OrderBy(t => t.Length).ToArray();
            var vectors = new System.Collections.Concurrent.ConcurrentDictionary<string, float[]>(StringComparer.Ordinal);
            var done = 0;
            Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, texts.Length, 32), range =>
            {
                var batch = texts[range.Item1..range.Item2];
                var v = embedBatch(batch);
                for (var i = 0; i < batch.Length; i++) vectors[batch[i]] = v[i];
                var n = Interlocked.Add(ref done, batch.Length);
                if (n / 2000 != (n - batch.Length) / 2000) progress?.Report(n);
            });
            embed = t => vectors[t];
        }
        // another generator (an ONNX encoder) can be measured the same way: it must return normalized vectors
        embed ??= generator.Embed;
        var guardRejections = 0;
        Scored[] Score(LabeledPair[] set, int offset)
        {
            var result = new Scored[set.Length];
            Parallel.For(0, set.Length, i =>
            {
                var p = set[i];
                var score = TensorPrimitives.Dot(embed(p.A), embed(p.B));
                var failing = SemanticGuards.Failing(p.A, p.B);
                if ((failing & guards) != 0) Interlocked.Increment(ref guardRejections);
                result[i] = new Scored(score, failing, p.Duplicate);
                if (embedBatch is null && i % 5000 == 0) progress?.Report(offset + i);
            });
            return result;
        }
        var cal = Score(calibration, 0);
        var tst = Score(test, calibration.Length);
        var thresholds = Enumerable.Range(0, 100).Select(i => 0.50f + i * 0.005f).ToArray();
        var calMetrics = thresholds.Select(t => Metrics(cal, t, guards)).ToArray();
        ThresholdMetrics? chosen = calMetrics.Where(m => m.TruePositives + m.FalsePositives >= 20 && m.Precision >= targetPrecision).Select(m => (ThresholdMetrics?)m).FirstOrDefault();
        ThresholdMetrics? onTest = chosen is { } c ? Metrics(tst, c.Threshold, guards) : null;
        var at = chosen?.Threshold ?? 0.95f;
        var effects = SemanticGuards.Names.Select((name, i) => new GuardEffect(name,
            Metrics(cal, at, guards | (1 << i)), Metrics(cal, at, guards & ~(1 << i)), Metrics(tst, at, guards | (1 << i)), Metrics(tst, at, guards & ~(1 << i)))).ToArray();
        var fps = Enumerable.Range(0, test.Length).Where(i => !tst[i].Dup && tst[i].Score >= at && (tst[i].Failing & guards) == 0)
            .OrderByDescending(i => tst[i].Score).Take(25).Select(i => (test[i].A, test[i].B, tst[i].Score)).ToArray();
        var guarded = Enumerable.Range(0, test.Length).Where(i => tst[i].Dup && tst[i].Score >= at && (tst[i].Failing & guards) != 0).Take(25)
            .Select(i => (test[i].A, test[i].B, SemanticGuards.Names[System.Numerics.BitOperations.TrailingZeroCount(tst[i].Failing & guards)])).ToArray();
        return new EvaluationResult(calibration.Length, test.Length, calMetrics, chosen, onTest, targetPrecision, guardRejections)
        {
            TestCurve = thresholds.Select(t => Metrics(tst, t, guards)).ToArray(),
            Guards = effects,
            FalsePositives = fps,
            GuardedDuplicates = guarded,
        };
    }

    private readonly record struct Scored(float Score, int Failing, bool Dup);

    private static ThresholdMetrics Metrics(Scored[] scored, float threshold, int guards)
    {
        int tp = 0, fp = 0, fn = 0, tn = 0;
        foreach (var (score, failing, dup) in scored)
        {
            var hit = score >= threshold && (failing & guards) == 0;
            if (hit && dup) tp++;
            else if (hit) fp++;
            else if (dup) fn++;
            else tn++;
        }
        return new ThresholdMetrics(threshold, tp + fp == 0 ? 1 : (double)tp / (tp + fp), tp + fn == 0 ? 0 : (double)tp / (tp + fn), fp + tn == 0 ? 0 : (double)fp / (fp + tn), tp, fp);
    }
}
