using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;
using Microsoft.Extensions.AI;

namespace Bursar.Benchmarks;

/// <summary>
/// MiniLM embeddings per second, one sentence per ONNX run vs concurrent callers batched by <see cref="BatchingEmbeddingGenerator"/>,
/// over QQP questions (../shared/data/semantic_cache/qqp_pairs.jsonl.gz), and the p50 / p99 of one question embedded alone:
/// <c>nice -n 10 dotnet run -c Release --project bench/Bursar.Benchmarks -- embed-throughput [seconds per mode, default 10]</c>.
/// </summary>
public static class EmbeddingThroughput
{
    public static async Task RunAsync(string[] args)
    {
        var seconds = args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10;
        var questions = LoadQuestions(4000);
        using var onnx = MiniLmModel.Load(Path.Combine(Path.GetTempPath(), "bursar-bench-minilm"));
        foreach (var q in questions.Take(50)) onnx.Embed(q); // warm up

        // one question alone, one after another: the latency a lone lookup pays
        var times = new List<double>();
        var sw = Stopwatch.StartNew();
        var i = 0;
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            var t0 = Stopwatch.GetTimestamp();
            onnx.Embed(questions[i++ % questions.Length]);
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        times.Sort();
        Console.WriteLine($"one caller, one-by-one:           {times.Count / sw.Elapsed.TotalSeconds,7:F0} embeddings/s; p50 {times[times.Count / 2]:F2} ms, p99 {times[(int)(times.Count * 0.99)]:F2} ms per question");

        foreach (var callers in new[] { 2, 8, 32 })
        {
            var direct = await Concurrent(onnx, questions, callers, seconds);
            Console.WriteLine($"{callers,2} callers, one run per question: {direct.PerSecond,7:F0} embeddings/s; p50 {direct.P50:F2} ms per question");
            foreach (var (maxBatch, runners, waitMs) in args.Length > 2 && args[2] == "defaults" ? new[] { (8, Environment.ProcessorCount, 0) } : new[] { (8, 1, 1), (8, 2, 1), (16, 1, 1), (8, Environment.ProcessorCount, 0) })
            {
                using var batching = new BatchingEmbeddingGenerator(new Borrowed(onnx), new EmbeddingBatchingOptions { MaxBatchSize = maxBatch, MaxConcurrentBatches = runners, MaxWait = TimeSpan.FromMilliseconds(waitMs) });
                var batched = await Concurrent(batching, questions, callers, seconds);
                Console.WriteLine($"{callers,2} callers, batched (max {maxBatch}, {runners} runner{(runners > 1 ? "s" : "")}, wait {waitMs} ms): {batched.PerSecond,7:F0} embeddings/s; p50 {batched.P50:F2} ms per question; mean batch {(double)batching.Texts / Math.Max(1, batching.Batches):F1}");
            }
        }
    }

    private static async Task<(double PerSecond, double P50)> Concurrent(IEmbeddingGenerator<string, Embedding<float>> g, string[] questions, int callers, double seconds)
    {
        var sw = Stopwatch.StartNew();
        var next = 0;
        var all = new List<double>[callers];
        await Task.WhenAll(Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            var mine = all[c] = [];
            while (sw.Elapsed.TotalSeconds < seconds)
            {
                var q = questions[Interlocked.Increment(ref next) % questions.Length];
                var t0 = Stopwatch.GetTimestamp();
                await g.GenerateAsync([q]).ConfigureAwait(false);
                mine.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        })));
        var times = all.SelectMany(x => x).Order().ToArray();
        return (times.Length / sw.Elapsed.TotalSeconds, times[times.Length / 2]);
    }

    private static string[] LoadQuestions(int n)
    {
        var path = Path.Combine(FindShared(), "data", "semantic_cache", "qqp_pairs.jsonl.gz");
        using var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress);
        using var reader = new StreamReader(gz);
        var list = new List<string>();
        while (list.Count < n && reader.ReadLine() is { } line)
        {
            using var doc = JsonDocument.Parse(line);
            foreach (var p in doc.RootElement.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.String && p.Name is "question1" or "question2" or "q1" or "q2" or "a" or "b" or "text1" or "text2") list.Add(p.Value.GetString()!);
        }
        if (list.Count == 0) throw new InvalidDataException($"no questions read from {path}");
        return [.. list];
    }

    private static string FindShared()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var s = Path.Combine(d.FullName, "shared");
            if (Directory.Exists(Path.Combine(s, "data"))) return s;
        }
        return "/work/shared";
    }

    private sealed class Borrowed(IEmbeddingGenerator<string, Embedding<float>> inner) : DelegatingEmbeddingGenerator<string, Embedding<float>>(inner)
    {
        protected override void Dispose(bool disposing) { }
    }
}
