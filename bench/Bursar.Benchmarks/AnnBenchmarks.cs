using System.Diagnostics;
using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;

namespace Bursar.Benchmarks;

/// <summary>
/// One semantic-cache lookup in a partition of MiniLM-sized vectors (384 floats): the exact SIMD scan vs the HNSW tier (USearch,
/// i8 graph, 16 candidates re-ranked exactly). Vectors are clustered like sentence embeddings (4,000 topics plus noise); queries
/// are near-duplicates of stored entries (what a hit looks like). Run:
/// <c>nice -n 10 dotnet run -c Release --project bench/Bursar.Benchmarks -- --filter '*AnnLookup*' --job short</c>.
/// Per-lookup percentiles and memory per entry: <c>-- ann-percentiles [entries]</c>.
/// </summary>
[MemoryDiagnoser]
public class AnnLookupBenchmarks
{
    private const string Partition = "tenant|gpt-4o-mini|sys|openai|j";
    private VectorIndex<string>? _exact;
    private HnswVectorIndex<string>? _ann;
    private float[][] _queries = null!;
    private int _next;

    [Params(100_000)]
    public int Entries { get; set; }

    [GlobalSetup(Target = nameof(ExactScan))]
    public void SetupExact()
    {
        var (stored, queries) = AnnData.Make(Entries, 1000);
        var names = AnnData.Names(Entries);
        _exact = new VectorIndex<string>(AnnData.Dims);
        for (var i = 0; i < stored.Length; i++) _exact.Add(Partition, stored[i], names[i]);
        _queries = queries;
    }

    [GlobalSetup(Target = nameof(Hnsw))]
    public void SetupHnsw()
    {
        var (stored, queries) = AnnData.Make(Entries, 1000);
        var names = AnnData.Names(Entries);
        _ann = new HnswVectorIndex<string>(AnnData.Dims);
        for (var i = 0; i < stored.Length; i++) _ann.Add(Partition, stored[i], names[i]);
        _queries = queries;
    }

    [GlobalCleanup]
    public void Cleanup() => _ann?.Dispose();

    [Benchmark(Baseline = true)]
    public float ExactScan() => _exact!.Nearest(Partition, _queries[_next++ % _queries.Length]).Score;

    [Benchmark]
    public float Hnsw() => _ann!.Nearest(Partition, _queries[_next++ % _queries.Length]).Score;
}

internal static class AnnData
{
    public const int Dims = MiniLmModel.Dimensions;
    public static string[] Names(int n) => Enumerable.Range(0, n).Select(i => $"e{i}").ToArray();

    public static (float[][] Stored, float[][] Queries) Make(int n, int queries)
    {
        var rng = new Random(7);
        var topics = Enumerable.Range(0, 4000).Select(_ => Unit(Enumerable.Range(0, Dims).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray())).ToArray();
        var stored = new float[n][];
        for (var i = 0; i < n; i++)
        {
            var t = topics[rng.Next(topics.Length)];
            var v = new float[Dims];
            for (var d = 0; d < Dims; d++) v[d] = t[d] + (float)(rng.NextDouble() - 0.5) * 0.1f;
            stored[i] = Unit(v);
        }
        var q = new float[queries][];
        for (var i = 0; i < queries; i++)
        {
            var s = stored[rng.Next(n)];
            var v = new float[Dims];
            for (var d = 0; d < Dims; d++) v[d] = s[d] + (float)(rng.NextDouble() - 0.5) * 0.01f;
            q[i] = Unit(v);
        }
        return (stored, q);
    }

    private static float[] Unit(float[] v)
    {
        TensorPrimitives.Divide(v, TensorPrimitives.Norm(v), v);
        return v;
    }
}

/// <summary>p50 / p99 of single lookups (exact scan and HNSW), how often HNSW returns the exact nearest, and memory per entry.</summary>
public static class AnnPercentiles
{
    public static void Run(string[] args)
    {
        var n = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000;
        var quantization = args.Length > 2 ? args[2] : "i8";
        var (stored, queries) = AnnData.Make(n, 5000);
        var items = Enumerable.Range(0, n).Select(i => $"e{i}").ToArray(); // one item per entry, made before memory is measured
        const string p = "p";
        long Mem() { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); using var proc = Process.GetCurrentProcess(); return proc.PrivateMemorySize64; }
        var m0 = Mem();
        var sw = Stopwatch.StartNew();
        var ann = new HnswVectorIndex<string>(AnnData.Dims, new HnswIndexOptions { Quantization = quantization });
        for (var i = 0; i < n; i++) ann.Add(p, stored[i], items[i]);
        var build = sw.Elapsed;
        var m1 = Mem();
        var exact = new VectorIndex<string>(AnnData.Dims);
        for (var i = 0; i < n; i++) exact.Add(p, stored[i], items[i]);
        var m2 = Mem();
        Console.WriteLine($"{n:N0} entries ({quantization} graph): HNSW built in {build.TotalSeconds:F1} s; memory per entry: HNSW tier {(m1 - m0) / (double)n:F0} B (charged {ann.Bytes / (double)n:F0} B), exact {(m2 - m1) / (double)n:F0} B (charged {exact.Bytes / (double)n:F0} B)");
        // the exact scan is linear: past 200,000 entries it is timed (and checked against) on fewer queries so a run ends in minutes
        var exactQueries = n > 200_000 ? queries.Take(500).ToArray() : queries;
        foreach (var (name, index, asked) in new (string, IVectorIndex<string>, float[][])[] { ("exact", exact, exactQueries), ("hnsw", ann, queries) })
        {
            foreach (var q in asked.Take(200)) index.Nearest(p, q);
            var times = new double[asked.Length];
            for (var i = 0; i < asked.Length; i++)
            {
                var t0 = Stopwatch.GetTimestamp();
                index.Nearest(p, asked[i]);
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            Array.Sort(times);
            Console.WriteLine($"  {name,-5}: p50 {times[times.Length / 2]:F3} ms, p99 {times[(int)(times.Length * 0.99)]:F3} ms ({asked.Length:N0} lookups)");
        }
        var same = exactQueries.Count(q => ReferenceEquals(ann.Nearest(p, q).Item, exact.Nearest(p, q).Item) && ann.Nearest(p, q).Score == exact.Nearest(p, q).Score);
        Console.WriteLine($"  hnsw returned the exact nearest (same score) for {same:N0} of {exactQueries.Length:N0} near-duplicate queries");
        ann.Dispose();
    }
}
